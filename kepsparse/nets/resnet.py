"""Reference ResNets: ImageNet ResNet-18 / ResNet-50 (torchvision's layout) and the CIFAR
ResNet-56 / ResNet-110 of He et al. 2016 with zero-pad ("option A") shortcuts.

Counts (``kepsparse.nets.flops.count``, MACs as the literature's "FLOPs"):
    resnet18   11.69 M params  1.81 G FLOPs (224x224)
    resnet50   25.56 M params  4.09 G FLOPs (224x224)
    resnet56    0.85 M params  125.49 M FLOPs (32x32)
    resnet110   1.72 M params  252.89 M FLOPs (32x32)

torch is imported when a network is built, not when this module is imported.
"""
from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=None)
def _classes():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    def conv3x3(cin, cout, stride=1):
        return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)

    class BasicBlock(nn.Module):
        expansion = 1

        def __init__(self, cin, planes, stride=1, downsample=None):
            super().__init__()
            self.conv1 = conv3x3(cin, planes, stride)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = conv3x3(planes, planes)
            self.bn2 = nn.BatchNorm2d(planes)
            self.downsample = downsample

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            idt = x if self.downsample is None else self.downsample(x)
            return F.relu(out + idt)

    class Bottleneck(nn.Module):
        expansion = 4

        def __init__(self, cin, planes, stride=1, downsample=None):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = conv3x3(planes, planes, stride)  # torchvision v1.5: stride in the 3x3
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes * 4)
            self.downsample = downsample

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = F.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            idt = x if self.downsample is None else self.downsample(x)
            return F.relu(out + idt)

    class ResNet(nn.Module):
        """ImageNet ResNet (torchvision layout, names and shapes)."""

        def __init__(self, block, layers, num_classes=1000):
            super().__init__()
            self.inplanes = 64
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            self.layer1 = self._make_layer(block, 64, layers[0])
            self.layer2 = self._make_layer(block, 128, layers[1], 2)
            self.layer3 = self._make_layer(block, 256, layers[2], 2)
            self.layer4 = self._make_layer(block, 512, layers[3], 2)
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(512 * block.expansion, num_classes)
            _init(self)

        def _make_layer(self, block, planes, blocks, stride=1):
            downsample = None
            if stride != 1 or self.inplanes != planes * block.expansion:
                downsample = nn.Sequential(
                    nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                    nn.BatchNorm2d(planes * block.expansion))
            layers = [block(self.inplanes, planes, stride, downsample)]
            self.inplanes = planes * block.expansion
            layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
            return nn.Sequential(*layers)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    class ZeroPadShortcut(nn.Module):
        """Option A: subsample by 2 and zero-pad the new channels (no parameters)."""

        def __init__(self, planes):
            super().__init__()
            self.pad = planes // 4

        def forward(self, x):
            return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))

    class CifarBlock(nn.Module):
        def __init__(self, cin, planes, stride=1):
            super().__init__()
            self.conv1 = conv3x3(cin, planes, stride)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = conv3x3(planes, planes)
            self.bn2 = nn.BatchNorm2d(planes)
            self.shortcut = ZeroPadShortcut(planes) if stride != 1 or cin != planes \
                else nn.Identity()

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return F.relu(out + self.shortcut(x))

    class CifarResNet(nn.Module):
        """CIFAR ResNet-(6n+2): 16/32/64 channels, zero-pad shortcuts."""

        def __init__(self, depth=56, num_classes=10):
            super().__init__()
            if (depth - 2) % 6:
                raise ValueError("depth must be 6n+2")
            n = (depth - 2) // 6
            self.conv1 = conv3x3(3, 16)
            self.bn1 = nn.BatchNorm2d(16)
            cin, stages = 16, []
            for planes, stride in ((16, 1), (32, 2), (64, 2)):
                blocks = []
                for i in range(n):
                    blocks.append(CifarBlock(cin, planes, stride if i == 0 else 1))
                    cin = planes
                stages.append(nn.Sequential(*blocks))
            self.layer1, self.layer2, self.layer3 = stages
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(64, num_classes)
            _init(self)

        def forward(self, x):
            x = F.relu(self.bn1(self.conv1(x)))
            x = self.layer3(self.layer2(self.layer1(x)))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    def _init(model):
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    return {"ResNet": ResNet, "BasicBlock": BasicBlock, "Bottleneck": Bottleneck,
            "CifarResNet": CifarResNet}


def _seeded(seed):
    import torch
    if seed is not None:
        torch.manual_seed(seed)


def randomize_bn(model, seed: int = 0):
    """Give every BatchNorm non-trivial running statistics and affine parameters (so that
    folding and inference are exercised as with a trained network); returns ``model``."""
    import torch
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.2 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
    return model


def resnet18(seed: int = 0, num_classes: int = 1000):
    _seeded(seed)
    c = _classes()
    return c["ResNet"](c["BasicBlock"], [2, 2, 2, 2], num_classes)


def resnet34(seed: int = 0, num_classes: int = 1000):
    _seeded(seed)
    c = _classes()
    return c["ResNet"](c["BasicBlock"], [3, 4, 6, 3], num_classes)


def resnet50(seed: int = 0, num_classes: int = 1000):
    _seeded(seed)
    c = _classes()
    return c["ResNet"](c["Bottleneck"], [3, 4, 6, 3], num_classes)


def resnet56(seed: int = 0, num_classes: int = 10):
    _seeded(seed)
    return _classes()["CifarResNet"](56, num_classes)


def resnet110(seed: int = 0, num_classes: int = 10):
    _seeded(seed)
    return _classes()["CifarResNet"](110, num_classes)


#: name -> factory(seed=0) -> nn.Module (found by kepsparse.nets.get_model)
MODELS = {"resnet18": resnet18, "resnet34": resnet34, "resnet50": resnet50,
          "resnet56": resnet56, "resnet110": resnet110}

#: input shape (C, H, W) each network is defined for
INPUT_SHAPES = {"resnet18": (3, 224, 224), "resnet34": (3, 224, 224), "resnet50": (3, 224, 224),
                "resnet56": (3, 32, 32), "resnet110": (3, 32, 32)}
