"""The real ImageNet example: published EfficientNet-Lite2 weights and shipped photos give real predictions."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.integration


def test_efficientnet_lite2_recognises_the_shipped_cat_photo():
    import torch

    from edgec.examples.imagenet import IMAGE_SIZE, efficientnet_lite2, photo_crops, photos

    assert len(photos("calib")) + len(photos("eval")) == len(photos("all"))
    crops = photo_crops(2, "calib", seed=0)  # photo 0 of the calib split is scikit-image's cat (chelsea)
    assert crops.shape == (2, 3, IMAGE_SIZE, IMAGE_SIZE) and crops.dtype == np.float32
    assert crops.min() >= -1.01 and crops.max() <= 1.0
    with torch.no_grad():
        probs = torch.softmax(efficientnet_lite2()(torch.from_numpy(crops[:1])), 1)[0]
    # ImageNet classes 281-285 are domestic cats; random weights would spread over 1000 classes.
    assert int(probs.argmax()) in range(281, 286)
    assert float(probs.max()) > 0.2
    # Crops are reproducible for a seed and differ across seeds.
    assert np.array_equal(photo_crops(1, "eval", seed=3), photo_crops(1, "eval", seed=3))
    assert not np.array_equal(photo_crops(1, "eval", seed=3), photo_crops(1, "eval", seed=4))
