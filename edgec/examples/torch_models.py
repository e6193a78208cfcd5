"""PyTorch example models. Each factory takes no required argument, so ``module:factory`` specs work."""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "MobileNetV2Like",
    "digits_cnn",
    "digits_mlp",
    "mlp",
    "mobilenet_v2_like",
    "residual_stack",
    "tiny_mobilenet",
    "train_classifier",
]

# MobileNetV2's inverted-residual settings (expansion t, channels c, repeats n, stride s).
MOBILENET_V2_BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                       (6, 320, 1, 1))
TINY_BLOCKS = ((1, 8, 1, 1), (4, 16, 2, 2), (4, 24, 2, 2))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
                   nn.ReLU6(), nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.block(x)
        return x + y if self.residual else y


class MobileNetV2Like(nn.Module):
    """MobileNetV2's structure: depthwise-separable inverted residuals, BN, ReLU6, residual adds."""

    def __init__(self, num_classes: int = 1000, blocks=MOBILENET_V2_BLOCKS, stem: int = 32, last: int = 1280,
                 in_channels: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, stem, 3, 2, 1, bias=False), nn.BatchNorm2d(stem),
                                   nn.ReLU6()]
        cin = stem
        for t, c, n, s in blocks:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers += [nn.Conv2d(cin, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).mean((2, 3)))


def _pretrained_style(model: nn.Module, seed: int) -> nn.Module:
    """Give BN layers the statistics of a trained network (random weights alone make flat, easy activations)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.2)
                module.running_var.copy_(torch.rand(n, generator=generator) * 1.5 + 0.25)
                module.weight.copy_(torch.rand(n, generator=generator) * 1.0 + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)
    return model.eval()


def _estimate_bn_statistics(model: nn.Module, shape: tuple, seed: int, batches: int = 4) -> nn.Module:
    """Set BN running statistics from the network's own activations on seeded inputs, as training would.

    With made-up statistics a deep random network's signal vanishes and every input gives the same output,
    which makes agreement/accuracy figures measured on it meaningless.
    """
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # cumulative average over the batches below
            module.reset_running_stats()
    generator = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn(8, *shape, generator=generator))
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 0.1
    return model.eval()


def mobilenet_v2_like(num_classes: int = 1000, seed: int = 0) -> MobileNetV2Like:
    """Full-size MobileNetV2 structure (3.5 M parameters) for 224x224 inputs; deterministic weights, BN
    statistics estimated from its own activations (outputs depend on the input, as in a trained network)."""
    torch.manual_seed(seed)
    model = _pretrained_style(MobileNetV2Like(num_classes), seed)
    return _estimate_bn_statistics(model, (3, 224, 224), seed)


def tiny_mobilenet(num_classes: int = 10, seed: int = 0, in_channels: int = 3) -> MobileNetV2Like:
    """A small MobileNetV2-style CNN (fast to export and convert) for tests."""
    torch.manual_seed(seed)
    return _pretrained_style(MobileNetV2Like(num_classes, TINY_BLOCKS, stem=8, last=64, in_channels=in_channels),
                             seed)


def mlp(in_features: int = 256, hidden: int = 512, out_features: int = 10, depth: int = 3, seed: int = 0):
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    width = in_features
    for _ in range(depth - 1):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers).eval()


class ResidualStack(nn.Module):
    def __init__(self, channels: int = 32, blocks: int = 4):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, 1, 1), nn.ReLU())
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(),
                          nn.Conv2d(channels, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels))
            for _ in range(blocks))
        self.head = nn.Linear(channels, 10)

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = torch.relu(x + block(x))
        return self.head(x.mean((2, 3)))


def residual_stack(seed: int = 0) -> ResidualStack:
    torch.manual_seed(seed)
    return _pretrained_style(ResidualStack(), seed)


class DigitsCNN(nn.Module):
    """A small CNN for scikit-learn's 8x8 digits (input N x 1 x 8 x 8)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.classifier = nn.Linear(32 * 4 * 4, 10)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


def digits_cnn(seed: int = 0) -> DigitsCNN:
    torch.manual_seed(seed)
    return DigitsCNN().eval()


def digits_mlp(seed: int = 0):
    return mlp(64, 256, 10, depth=3, seed=seed)


def train_classifier(model: nn.Module, x, y, epochs: int = 30, lr: float = 3e-3, seed: int = 0) -> nn.Module:
    """Full-batch-ish Adam training on numpy arrays; deterministic for a seed. Returns the model in eval mode."""
    torch.manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        permutation = torch.randperm(len(xt))
        for start in range(0, len(xt), 64):
            idx = permutation[start:start + 64]
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            loss.backward()
            optimizer.step()
    return model.eval()
