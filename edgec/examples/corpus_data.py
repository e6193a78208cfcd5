"""Real inputs for the corpus models, made from data that installed packages ship (nothing is downloaded).

Faces come from scikit-image's ``lfw_subset`` (100 Labeled-Faces-in-the-Wild faces) and the face in
``astronaut``; text from ``page`` and ``text``; photos from ``coffee``, ``chelsea``, ``rocket``, ``camera``.
Speech-like audio is synthesised: voiced bursts (a jittered glottal pitch with harmonics shaped by formant
resonances and a syllable envelope) between silences and noise, at 16 kHz. Each image is pre-processed the way
the model's own package does it (rapidocr's and ddddocr's pre-processing code: sizes, mean/std, channel order).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "ddddocr_det_images",
    "face_crops",
    "fer_faces",
    "mtcnn_crops",
    "ocr_det_images",
    "ocr_rec_lines",
    "photos",
    "speech_like_audio",
    "text_lines",
]

# The astronaut's face in skimage's astronaut.png (rows, cols).
ASTRONAUT_FACE = (slice(20, 200), slice(150, 320))
TEXT_IMAGES = ("page", "text")
PHOTO_IMAGES = ("coffee", "chelsea", "rocket", "astronaut", "camera", "immunohistochemistry")


def _skimage(name: str) -> np.ndarray:
    import skimage.data

    return np.asarray(getattr(skimage.data, name)())


def _rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3]


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(np.asarray(image, np.uint8)).resize((width, height), Image.BILINEAR))


def face_crops(n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` RGB uint8 face crops: the LFW faces (grey, made RGB) and jittered crops of the astronaut's face."""
    import skimage.data

    rng = np.random.default_rng(seed)
    lfw = (np.asarray(skimage.data.lfw_subset()[:100]) * 255).astype(np.uint8)  # first 100 are faces
    astronaut = _skimage("astronaut")
    crops = []
    for k in range(n):
        if k % 4 == 3:
            rows, cols = ASTRONAUT_FACE
            dy, dx = rng.integers(-15, 16, size=2)
            crops.append(astronaut[rows.start + dy:rows.stop + dy, cols.start + dx:cols.stop + dx])
        else:
            crops.append(_rgb(lfw[rng.integers(0, len(lfw))]))
    return crops


def fer_faces(n: int, seed: int = 0) -> np.ndarray:
    """fer's input: (n, 64, 64, 1) float32 grey faces scaled to [-1, 1] (fer's ``preprocess_input``, v2)."""
    faces = [_resize(crop, 64, 64).mean(axis=2) for crop in face_crops(n, seed)]
    return ((np.stack(faces)[..., None] / 255.0 - 0.5) * 2.0).astype(np.float32)


def mtcnn_crops(n: int, size: int, seed: int = 0) -> np.ndarray:
    """MTCNN's input: (n, 3, size, size) float32, ``(pixel - 127.5) / 128`` as facenet-pytorch does.

    Half are faces, half are patches of photos without a face at that scale (R/O-Net must tell them apart)."""
    rng = np.random.default_rng(seed)
    faces = face_crops(n - n // 2, seed)
    pictures = [_skimage(name) for name in PHOTO_IMAGES]
    patches = []
    for _ in range(n // 2):
        picture = _rgb(pictures[rng.integers(0, len(pictures))])
        side = int(rng.integers(40, min(picture.shape[:2]) // 2))
        y, x = rng.integers(0, picture.shape[0] - side), rng.integers(0, picture.shape[1] - side)
        patches.append(picture[y:y + side, x:x + side])
    crops = [_resize(c, size, size) for c in faces + patches]
    return ((np.stack(crops).transpose(0, 3, 1, 2).astype(np.float32) - 127.5) / 128.0).astype(np.float32)


def text_lines(min_height: int = 8) -> list[np.ndarray]:
    """Grey uint8 crops of single text lines from ``page`` and ``text``, found by the rows' ink profile."""
    lines = []
    for name in TEXT_IMAGES:
        from scipy.ndimage import uniform_filter

        image = _skimage(name)
        # Dark strokes against the local background (``page`` is lit unevenly).
        stroke = image.astype(np.float32) < uniform_filter(image.astype(np.float32), 25) - 20
        ink = stroke.mean(axis=1) > 0.02
        edges = np.flatnonzero(np.diff(np.concatenate([[0], ink.astype(np.int8), [0]])))
        for start, stop in zip(edges[::2], edges[1::2]):
            if stop - start >= min_height:
                lines.append(image[max(start - 3, 0):stop + 3])
    return lines


def ocr_rec_lines(n: int, height: int = 48, width: int = 320, seed: int = 0) -> np.ndarray:
    """PP-OCR recogniser input: (n, 3, height, width) float32 (rapidocr ``resize_norm_img``: keep the aspect
    ratio, scale to [-1, 1], zero-pad on the right). Lines wider than ``width`` are cut into pieces."""
    rng = np.random.default_rng(seed)
    pieces = []
    for line in text_lines():
        new_width = int(np.ceil(height * line.shape[1] / line.shape[0]))
        resized = _resize(line, height, new_width)
        for start in range(0, new_width - width // 3, width):
            pieces.append(resized[:, start:start + width])
    out = np.zeros((n, 3, height, width), np.float32)
    for k in range(n):
        piece = pieces[k] if k < len(pieces) else pieces[rng.integers(0, len(pieces))]
        out[k, :, :, :piece.shape[1]] = (piece[None].astype(np.float32) / 255.0 - 0.5) / 0.5
    return out


def photos(names=TEXT_IMAGES + PHOTO_IMAGES) -> list[np.ndarray]:
    return [_rgb(_skimage(name)) for name in names]


def ocr_det_images(n: int, size: int = 320, seed: int = 0) -> np.ndarray:
    """PP-OCR DBNet input: (n, 3, size, size) float32, BGR, ``(x / 255 - 0.5) / 0.5`` (rapidocr DetPreProcess).

    The text images first, then in turn a random crop of the page (its text at a larger scale; the ``text`` sign
    has no text DBNet finds at these sizes) and a photo: a detector is calibrated and measured on text mostly,
    and on scenes without any."""
    rng = np.random.default_rng(seed)
    texts, scenes = photos(TEXT_IMAGES), photos(PHOTO_IMAGES)
    out = []
    for k in range(n):
        crop = k >= len(texts) and k % 2 == 0
        image = texts[k] if k < len(texts) else texts[0] if crop else scenes[(k // 2) % len(scenes)]
        if crop:
            h, w = image.shape[:2]
            side = int(rng.integers(min(h, w) // 2, min(h, w) + 1))
            y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
            image = image[y:y + side, x:x + side]
        out.append(_resize(image, size, size)[..., ::-1])
    return ((np.stack(out).transpose(0, 3, 1, 2) / 255.0 - 0.5) / 0.5).astype(np.float32)


def ddddocr_det_images(n: int, size: int = 416, seed: int = 0) -> np.ndarray:
    """ddddocr's detector input: (n, 3, size, size) float32 BGR pixels 0..255, letterboxed on grey 114 at the
    top left (ddddocr ``DetectionEngine.preproc``)."""
    rng = np.random.default_rng(seed)
    images = photos()
    out = np.full((n, size, size, 3), 114, np.uint8)
    for k in range(n):
        image = images[k % len(images)]
        h, w = image.shape[:2]
        ratio = min(size / h, size / w) * (1.0 if k < len(images) else float(rng.uniform(0.5, 1.0)))
        resized = _resize(image, int(h * ratio), int(w * ratio))
        out[k, :resized.shape[0], :resized.shape[1]] = resized[..., ::-1]
    return out.transpose(0, 3, 1, 2).astype(np.float32)


def speech_like_audio(seconds: float = 4.0, rate: int = 16000, seed: int = 0) -> np.ndarray:
    """Mono float32 audio in [-1, 1]: syllable-like voiced bursts separated by silence and noise."""
    rng = np.random.default_rng(seed)
    total = int(seconds * rate)
    audio = rng.normal(0, 0.002, total)  # room noise floor
    t = 0
    while t < total:
        gap = int(rng.uniform(0.15, 0.6) * rate)
        if rng.random() < 0.3:  # a stretch of louder broadband noise (not speech)
            audio[t:t + gap] += rng.normal(0, 0.02, len(audio[t:t + gap]))
        t += gap
        burst = int(rng.uniform(0.25, 0.8) * rate)
        audio[t:t + burst] += _voiced(min(burst, total - t), rate, rng) if t < total else 0
        t += burst
    return np.clip(audio, -1, 1).astype(np.float32)


def _voiced(length: int, rate: int, rng) -> np.ndarray:
    """Harmonics of a wandering pitch, weighted by three formant resonances, under a 4-6 Hz syllable envelope."""
    time = np.arange(length) / rate
    f0 = rng.uniform(100, 220) * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(2, 5) * time))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    formants = rng.uniform([450, 1000, 2300], [850, 2000, 3000])
    signal = np.zeros(length)
    for harmonic in range(1, 30):
        freq = harmonic * f0.mean()
        if freq > rate / 2 - 500:
            break
        gain = sum(1.0 / (1 + ((freq - f) / 120.0) ** 2) for f in formants) / harmonic ** 0.5
        signal += gain * np.sin(harmonic * phase)
    envelope = np.abs(np.sin(np.pi * rng.uniform(4, 6) * time)) ** 0.7 * np.hanning(length) ** 0.3
    return 0.3 * signal / max(np.abs(signal).max(), 1e-6) * envelope
