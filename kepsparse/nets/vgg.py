"""Reference CIFAR VGG-16 (with and without BatchNorm), the layout of the filter-pruning
literature (HRank, FPGM, ...): 13 3x3 convs with bias, 4 max-pools, a 2x2 average pool,
then Linear(512, 512) - BN1d - ReLU - Linear(512, 10).

Counts (``kepsparse.nets.flops.count``): vgg16_bn 14.98 M params, 313.73 M FLOPs at 32x32.
torch is imported when a network is built, not when this module is imported.
"""
from __future__ import annotations

from functools import lru_cache

CFG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]


@lru_cache(maxsize=None)
def _vgg_class():
    import torch
    import torch.nn as nn

    class CifarVGG(nn.Module):
        def __init__(self, cfg=CFG16, batch_norm=True, num_classes=10):
            super().__init__()
            layers, cin = [], 3
            for v in cfg:
                if v == "M":
                    layers.append(nn.MaxPool2d(2, 2))
                    continue
                layers.append(nn.Conv2d(cin, v, 3, padding=1))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(v))
                layers.append(nn.ReLU(inplace=True))
                cin = v
            layers.append(nn.AvgPool2d(2))
            self.features = nn.Sequential(*layers)
            head = [nn.Linear(cin, 512)]
            if batch_norm:
                head.append(nn.BatchNorm1d(512))
            head += [nn.ReLU(inplace=True), nn.Linear(512, num_classes)]
            self.classifier = nn.Sequential(*head)
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                    nn.init.zeros_(m.bias)

        def forward(self, x):
            return self.classifier(torch.flatten(self.features(x), 1))

    return CifarVGG


def vgg16_bn(seed: int = 0, num_classes: int = 10):
    import torch
    torch.manual_seed(seed)
    return _vgg_class()(CFG16, True, num_classes)


def vgg16(seed: int = 0, num_classes: int = 10):
    import torch
    torch.manual_seed(seed)
    return _vgg_class()(CFG16, False, num_classes)


MODELS = {"vgg16_bn": vgg16_bn, "vgg16": vgg16}
INPUT_SHAPES = {"vgg16_bn": (3, 32, 32), "vgg16": (3, 32, 32)}
