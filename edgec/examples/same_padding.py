"""A PyTorch CNN with TensorFlow-style "same" padding, residual adds and a dynamic batch, as real ports of TF
models (timm's ``*_tf_*`` networks, EfficientDet) export it.

The padding is computed from the input's size in ``forward``; the TorchScript-based ONNX exporter turns it into
``Shape -> Gather -> ... -> ConstantOfShape/Concat/Slice/Cast -> Pad`` chains. Plain onnx2tf mis-converts such a
graph (a channel/layout mix-up at a Conv after an Add); edgec fixes the batch and simplifies it first.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional

__all__ = ["SamePadCNN", "export_same_pad_onnx", "same_pad_cnn"]


def _pad_same(x, kernel: int, stride: int):
    height, width = x.size()[-2:]
    pad_h = max((math.ceil(height / stride) - 1) * stride + kernel - height, 0)
    pad_w = max((math.ceil(width / stride) - 1) * stride + kernel - width, 0)
    return functional.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow's "same" padding (asymmetric for even totals), computed at run time."""

    def forward(self, x):
        return super().forward(_pad_same(x, self.kernel_size[0], self.stride[0]))


class SamePadCNN(nn.Module):
    def __init__(self, channels: int = 16, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.stem = nn.Sequential(Conv2dSame(in_channels, channels, 3, 2), nn.BatchNorm2d(channels), nn.ReLU6())
        self.block1 = nn.Sequential(Conv2dSame(channels, channels, 3, 1, groups=channels), nn.BatchNorm2d(channels),
                                    nn.ReLU6(), nn.Conv2d(channels, channels, 1))
        self.down = nn.Sequential(Conv2dSame(channels, 2 * channels, 3, 2), nn.ReLU6())
        self.block2 = nn.Sequential(Conv2dSame(2 * channels, 2 * channels, 3, 1), nn.ReLU6(),
                                    Conv2dSame(2 * channels, 2 * channels, 3, 1))
        self.head = nn.Linear(2 * channels, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.block1(x)
        x = self.down(x)
        x = torch.relu(x + self.block2(x))
        return self.head(x.mean((2, 3)))


def same_pad_cnn(seed: int = 0) -> SamePadCNN:
    torch.manual_seed(seed)
    model = SamePadCNN()
    with torch.no_grad():  # trained-looking BN statistics, as the other example CNNs have
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def export_same_pad_onnx(path: str | os.PathLike, size: int = 32, seed: int = 0) -> Path:
    """Export ``same_pad_cnn`` with the TorchScript exporter and a dynamic batch (input ``x``, output ``logits``)."""
    import warnings

    path = Path(path)
    model = same_pad_cnn(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 3, size, size),), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})
    return path
