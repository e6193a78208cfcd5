"""MTCNN's P-, R- and O-Nets with the trained weights that ``facenet-pytorch`` ships as state dicts.

``facenet_pytorch``'s ``__init__`` imports torchvision (and the package pins an old torch), so the package is
never imported: its weight files are found on disk (``edgec.examples.corpus.package_file``) and loaded with
``torch.load(..., weights_only=True)`` into the nets below, built from the state dicts' keys and shapes (the
layer order of facenet-pytorch 2.6.0's ``models/mtcnn.py``). Each factory takes no argument, so
``edgec.examples.corpus_mtcnn:pnet`` works as a ``module:factory`` source.
"""

from __future__ import annotations

import torch
from torch import nn

from edgec.examples.corpus import MTCNN_INPUT_SIZES, package_file

__all__ = ["ONet", "PNet", "RNet", "export_pt2", "onet", "pnet", "rnet"]

class PNet(nn.Module):
    """Proposal net: box regression (4 channels) and face probability (2 channels) for every 12x12 window."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1, self.conv4_2 = nn.Conv2d(32, 2, 1), nn.Conv2d(32, 4, 1)

    def forward(self, x):
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), torch.softmax(self.conv4_1(x), dim=1)


class RNet(nn.Module):
    """Refine net on 24x24 crops: box regression and face probability."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1, self.dense5_2 = nn.Linear(128, 2), nn.Linear(128, 4)

    def forward(self, x):
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        # The weights were trained (in Caffe) on a width-major flatten: keep facenet-pytorch's permute.
        x = self.prelu4(self.dense4(x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)))
        return self.dense5_2(x), torch.softmax(self.dense5_1(x), dim=1)


class ONet(nn.Module):
    """Output net on 48x48 crops: box regression, five facial landmarks, face probability."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1, self.dense6_2, self.dense6_3 = nn.Linear(256, 2), nn.Linear(256, 4), nn.Linear(256, 10)

    def forward(self, x):
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)))
        return self.dense6_2(x), self.dense6_3(x), torch.softmax(self.dense6_1(x), dim=1)


def _load(net: nn.Module, name: str) -> nn.Module:
    state = torch.load(package_file("facenet-pytorch", f"facenet_pytorch/data/{name}.pt"), weights_only=True)
    net.load_state_dict(state, strict=True)
    return net.eval()


def pnet() -> PNet:
    return _load(PNet(), "pnet")


def rnet() -> RNet:
    return _load(RNet(), "rnet")


def onet() -> ONet:
    return _load(ONet(), "onet")


def export_pt2(name: str, path) -> str:
    """Write the named net as a ``torch.export`` program (``.pt2``) for a batch-1 crop; returns the path."""
    net = {"pnet": pnet, "rnet": rnet, "onet": onet}[name]()
    size = MTCNN_INPUT_SIZES[name]
    program = torch.export.export(net, (torch.zeros(1, 3, size, size),))
    torch.export.save(program, str(path))
    return str(path)
