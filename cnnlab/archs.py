"""Architectures that no library ships: LeNet-5, the lecture's Keras CNN, and BN-Inception (v2)."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn


def lenet5(num_classes: int = 10) -> nn.Module:
    """LeNet-5 (LeCun et al. 1998) on 32x32 grayscale: C1-S2-C3-S4-C5-F6-output, tanh, average pooling.

    C3 is fully connected to S2 and the output is a linear layer (the paper used a sparse C3 table
    and RBF outputs fixed by hand), so this has 61,706 parameters against the paper's 60,000 trained ones.
    """
    return nn.Sequential(OrderedDict([
        ("c1", nn.Sequential(nn.Conv2d(1, 6, 5), nn.Tanh())),
        ("s2", nn.AvgPool2d(2)),
        ("c3", nn.Sequential(nn.Conv2d(6, 16, 5), nn.Tanh())),
        ("s4", nn.AvgPool2d(2)),
        ("c5", nn.Sequential(nn.Conv2d(16, 120, 5), nn.Tanh())),
        ("flatten", nn.Flatten()),
        ("f6", nn.Sequential(nn.Linear(120, 84), nn.Tanh())),
        ("output", nn.Linear(84, num_classes)),
    ]))


def lecture_cnn(num_classes: int = 1) -> nn.Module:
    """The lecture's Keras `Sequential` CNN for 150x150x3 input, layer for layer (5,615,553 parameters).

    With one class the output is a sigmoid unit, as in the lecture; with more it returns logits.
    """
    layers: list[tuple[str, nn.Module]] = []
    in_channels = 3
    for index, width in enumerate((32, 64, 128, 128), start=1):
        layers += [
            (f"conv_{index}", nn.Conv2d(in_channels, width, 3, padding="same")),
            (f"relu_{index}", nn.ReLU(inplace=True)),
            (f"maxpool_{index}", nn.MaxPool2d(2)),
        ]
        in_channels = width
    layers += [
        ("flatten", nn.Flatten()),
        ("dropout", nn.Dropout(0.5)),
        ("dense_1", nn.Linear(9 * 9 * 128, 512)),
        ("relu_5", nn.ReLU(inplace=True)),
        ("dense_2", nn.Linear(512, 128)),
        ("relu_6", nn.ReLU(inplace=True)),
        ("output", nn.Linear(128, num_classes)),
    ]
    if num_classes == 1:
        layers.append(("sigmoid", nn.Sigmoid()))
    return nn.Sequential(OrderedDict(layers))


class ConvBNReLU(nn.Sequential):
    """Convolution without bias, batch norm, ReLU: the unit BN-Inception is built from."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__(OrderedDict([
            ("conv", nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False)),
            ("bn", nn.BatchNorm2d(out_channels)),
            ("relu", nn.ReLU(inplace=True)),
        ]))


@dataclass(frozen=True)
class InceptionV2Config:
    """One row of Figure 5 in Ioffe & Szegedy (2015). `pool` is 'avg', 'max', or 'pass' (stride 2)."""

    name: str
    in_channels: int
    n1x1: int
    n3x3_reduce: int
    n3x3: int
    double_reduce: int
    double_3x3: int
    pool: str
    pool_proj: int
    stride: int = 1

    @property
    def out_channels(self) -> int:
        passthrough = self.in_channels if self.pool == "pass" else self.pool_proj
        return self.n1x1 + self.n3x3 + self.double_3x3 + passthrough


BN_INCEPTION_MODULES = (
    InceptionV2Config("inception_3a", 192, 64, 64, 64, 64, 96, "avg", 32),
    InceptionV2Config("inception_3b", 256, 64, 64, 96, 64, 96, "avg", 64),
    InceptionV2Config("inception_3c", 320, 0, 128, 160, 64, 96, "pass", 0, stride=2),
    InceptionV2Config("inception_4a", 576, 224, 64, 96, 96, 128, "avg", 128),
    InceptionV2Config("inception_4b", 576, 192, 96, 128, 96, 128, "avg", 128),
    InceptionV2Config("inception_4c", 576, 160, 128, 160, 128, 160, "avg", 96),
    InceptionV2Config("inception_4d", 576, 96, 128, 192, 160, 192, "avg", 96),
    InceptionV2Config("inception_4e", 576, 0, 128, 192, 192, 256, "pass", 0, stride=2),
    InceptionV2Config("inception_5a", 1024, 352, 192, 320, 160, 224, "avg", 128),
    InceptionV2Config("inception_5b", 1024, 352, 192, 320, 192, 224, "max", 128),
)


class InceptionV2Module(nn.Module):
    """An Inception module with batch norm and the 5x5 branch replaced by two stacked 3x3 convolutions."""

    def __init__(self, config: InceptionV2Config):
        super().__init__()
        c, s = config, config.stride
        self.branch1x1 = ConvBNReLU(c.in_channels, c.n1x1, 1) if c.n1x1 else None
        self.branch3x3 = nn.Sequential(OrderedDict([
            ("reduce", ConvBNReLU(c.in_channels, c.n3x3_reduce, 1)),
            ("conv", ConvBNReLU(c.n3x3_reduce, c.n3x3, 3, s)),
        ]))
        self.branch3x3dbl = nn.Sequential(OrderedDict([
            ("reduce", ConvBNReLU(c.in_channels, c.double_reduce, 1)),
            ("conv1", ConvBNReLU(c.double_reduce, c.double_3x3, 3)),
            ("conv2", ConvBNReLU(c.double_3x3, c.double_3x3, 3, s)),
        ]))
        pool = nn.AvgPool2d(3, 1, 1, count_include_pad=False) if c.pool == "avg" else nn.MaxPool2d(3, s, 1)
        if c.pool == "pass":
            self.branch_pool = pool
        else:
            self.branch_pool = nn.Sequential(OrderedDict([("pool", pool), ("proj", ConvBNReLU(c.in_channels, c.pool_proj, 1))]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.branch3x3(x), self.branch3x3dbl(x), self.branch_pool(x)]
        if self.branch1x1 is not None:
            branches.insert(0, self.branch1x1(x))
        return torch.cat(branches, 1)


class BNInception(nn.Module):
    """Inception v2 (BN-Inception), following Figure 5 of Ioffe & Szegedy (2015), for 224x224 RGB input."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        self.conv1 = ConvBNReLU(3, 64, 7, 2)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2_reduce = ConvBNReLU(64, 64, 1)
        self.conv2 = ConvBNReLU(64, 192, 3)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        for config in BN_INCEPTION_MODULES:
            self.add_module(config.name, InceptionV2Module(config))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(BN_INCEPTION_MODULES[-1].out_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.conv1(x))
        x = self.pool2(self.conv2(self.conv2_reduce(x)))
        for config in BN_INCEPTION_MODULES:
            x = getattr(self, config.name)(x)
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


def bn_inception(num_classes: int = 1000) -> nn.Module:
    """BN-Inception (Inception v2) with random weights."""
    return BNInception(num_classes)
