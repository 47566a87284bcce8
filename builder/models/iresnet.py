"""ArcFace iresnet100, the identity network GHOST conditions its generator on.

Parameter names and shapes follow insightface's arcface_torch ``backbones/iresnet.py``
(the ``iresnet.py`` shipped beside ``backbone.pth`` in the sber-swap ``arcface`` release),
so the official ``backbone.pth`` raw state dict loads unchanged: ``conv1``, ``bn1``,
``prelu``, ``layer1.0.*`` ... ``layer4.2.*``, ``bn2``, ``fc`` (512 x 25088), ``features``.
Input: RGB in [-1, 1] at 112 x 112. Output: the raw 512-d embedding (GHOST feeds it to
the generator without L2-normalising it).
"""

from __future__ import annotations

import torch
from torch import nn

EMBEDDING_SIZE = 512
INPUT_SIZE = 112
IRESNET100_LAYERS = (3, 13, 30, 3)
_BN_EPS = 1e-5


class IBasicBlock(nn.Module):
    """Pre-activation style block: BN -> conv -> BN -> PReLU -> conv(stride) -> BN, plus shortcut."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=_BN_EPS)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=_BN_EPS)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes, eps=_BN_EPS)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = self.downsample(x) if self.downsample is not None else x
        return out + shortcut


class IResNet(nn.Module):
    def __init__(self, layers: tuple[int, int, int, int], num_features: int = EMBEDDING_SIZE):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=_BN_EPS)
        self.prelu = nn.PReLU(64)
        inplanes = 64
        stages = []
        for planes, blocks in zip((64, 128, 256, 512), layers, strict=True):
            stages.append(self._stage(inplanes, planes, blocks))
            inplanes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.bn2 = nn.BatchNorm2d(512, eps=_BN_EPS)
        # Upstream keeps a Dropout(p=0) here; it has no parameters, so it is left out.
        self.fc = nn.Linear(512 * 7 * 7, num_features)  # four stride-2 stages: 112 -> 7
        self.features = nn.BatchNorm1d(num_features, eps=_BN_EPS)

    @staticmethod
    def _stage(inplanes: int, planes: int, blocks: int) -> nn.Sequential:
        # Every stage halves the resolution and changes the width, so its first block
        # always needs the projection shortcut (upstream's ``downsample``: 1x1 conv + BN).
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes, 1, stride=2, bias=False),
            nn.BatchNorm2d(planes, eps=_BN_EPS),
        )
        first = IBasicBlock(inplanes, planes, stride=2, downsample=downsample)
        return nn.Sequential(first, *(IBasicBlock(planes, planes) for _ in range(1, blocks)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.bn2(x), 1)
        return self.features(self.fc(x))


def iresnet100() -> IResNet:
    return IResNet(IRESNET100_LAYERS)


def settle_batchnorm(model: IResNet, seed: int, batch: int = 2) -> IResNet:
    """Give a random-weight iresnet BatchNorm statistics measured on seeded noise.

    ``randomize`` leaves every BatchNorm at mean 0 / variance 1, so nothing is normalised
    and 52 residual blocks compound into embeddings of norm ~1e8, which overflow fp16 in
    the generator. One cumulative-average pass in train mode sets each BatchNorm to the
    statistics it actually sees; the embedding then has per-dimension unit variance
    (norm about sqrt(512), near a real ArcFace's). For --random-weights and test fixtures only.
    """
    gen = torch.Generator().manual_seed(seed)
    noise = torch.rand(batch, 3, INPUT_SIZE, INPUT_SIZE, generator=gen) * 2 - 1
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.training) for m in norms]
    was_training = model.training
    device = next(model.parameters()).device
    with torch.no_grad():
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average: one pass sets the exact batch statistics
        model.train()
        model(noise.to(device))
    for m, (momentum, _) in zip(norms, saved, strict=True):
        m.momentum = momentum
    model.train(was_training)
    return model
