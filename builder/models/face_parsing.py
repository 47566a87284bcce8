"""The two face parsers of facexlib 0.3.0, BiSeNet and ParseNet, written for our loader.

Module names and shapes are facexlib's (``facexlib/parsing/bisenet.py``, ``resnet.py`` and
``parsenet.py``), so its released ``parsing_bisenet.pth`` / ``parsing_parsenet.pth`` load
strictly. facexlib itself is not a run-time dependency: its requirements pull in
``opencv-python`` beside our ``opencv-python-headless``. ``forward`` returns the 19-class
logits only; the heads whose outputs no caller reads (BiSeNet's auxiliary 1/16 and 1/32
outputs, ParseNet's image output) are kept so the checkpoints load, but are not run.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class ConvBNReLU(nn.Module):
    def __init__(self, cin: int, cout: int, ks: int = 3, padding: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, ks, 1, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if cin != cout or stride != 1 else None
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu((x if self.downsample is None else self.downsample(x)) + residual)


class ResNet18(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        for i, (cin, cout, stride) in enumerate(((64, 64, 1), (64, 128, 2), (128, 256, 2), (256, 512, 2)), 1):
            setattr(self, f"layer{i}", nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.layer1(self.maxpool(F.relu(self.bn1(self.conv1(x)))))
        feat8 = self.layer2(x)
        feat16 = self.layer3(feat8)
        return feat8, feat16, self.layer4(feat16)


class BiSeNetOutput(nn.Module):
    def __init__(self, cin: int, mid: int, classes: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(cin, mid)
        self.conv_out = nn.Conv2d(mid, classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


class AttentionRefinementModule(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(cin, cout)
        self.conv_atten = nn.Conv2d(cout, cout, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        return feat * torch.sigmoid(self.bn_atten(self.conv_atten(F.avg_pool2d(feat, feat.shape[2:]))))


class ContextPath(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.resnet = ResNet18()
        self.arm16 = AttentionRefinementModule(256, 128)
        self.arm32 = AttentionRefinementModule(512, 128)
        self.conv_head32 = ConvBNReLU(128, 128)
        self.conv_head16 = ConvBNReLU(128, 128)
        self.conv_avg = ConvBNReLU(512, 128, ks=1, padding=0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat8, feat16, feat32 = self.resnet(x)
        avg = F.interpolate(self.conv_avg(F.avg_pool2d(feat32, feat32.shape[2:])), feat32.shape[2:], mode="nearest")
        up32 = self.conv_head32(F.interpolate(self.arm32(feat32) + avg, feat16.shape[2:], mode="nearest"))
        up16 = self.conv_head16(F.interpolate(self.arm16(feat16) + up32, feat8.shape[2:], mode="nearest"))
        return feat8, up16


class FeatureFusionModule(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.convblk = ConvBNReLU(cin, cout, ks=1, padding=0)
        self.conv1 = nn.Conv2d(cout, cout // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(cout // 4, cout, 1, bias=False)

    def forward(self, fsp: torch.Tensor, fcp: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat([fsp, fcp], dim=1))
        atten = torch.sigmoid(self.conv2(F.relu(self.conv1(F.avg_pool2d(feat, feat.shape[2:])))))
        return feat * atten + feat


class BiSeNet(nn.Module):
    def __init__(self, num_class: int = 19) -> None:
        super().__init__()
        self.cp = ContextPath()
        self.ffm = FeatureFusionModule(256, 256)
        self.conv_out = BiSeNetOutput(256, 256, num_class)
        self.conv_out16 = BiSeNetOutput(128, 64, num_class)  # training-time auxiliary heads
        self.conv_out32 = BiSeNetOutput(128, 64, num_class)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat8, cp8 = self.cp(x)
        out = self.conv_out(self.ffm(feat8, cp8))
        return F.interpolate(out, x.shape[2:], mode="bilinear", align_corners=True)


class ConvLayer(nn.Module):
    """PSFRGAN's conv: optional nearest 2x up, reflection pad, conv (stride 2 down), norm, act."""

    def __init__(self, cin: int, cout: int, scale: str = "none", norm: bool = False, act: str = "none") -> None:
        super().__init__()
        self.up = scale == "up"
        self.reflection_pad = nn.ReflectionPad2d(1)
        self.conv2d = nn.Conv2d(cin, cout, 3, 2 if scale == "down" else 1, bias=not norm)
        if norm:
            self.norm = nn.Module()
            self.norm.norm = nn.BatchNorm2d(cout)  # facexlib's NormLayer holds it as .norm
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = self.conv2d(self.reflection_pad(x))
        if hasattr(self, "norm"):
            x = self.norm.norm(x)
        return F.leaky_relu(x, 0.2) if self.act == "leakyrelu" else x


class ResidualBlock(nn.Module):
    def __init__(self, cin: int, cout: int, scale: str = "none") -> None:
        super().__init__()
        self.shortcut_func = ConvLayer(cin, cout, scale) if scale != "none" or cin != cout else None
        first, second = {"down": ("none", "down"), "up": ("up", "none"), "none": ("none", "none")}[scale]
        self.conv1 = ConvLayer(cin, cout, first, norm=True, act="leakyrelu")
        self.conv2 = ConvLayer(cout, cout, second, norm=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x if self.shortcut_func is None else self.shortcut_func(x)) + self.conv2(self.conv1(x))


class ParseNet(nn.Module):
    """facexlib's ParseNet at its defaults (base 64 channels, clipped to 32..256, 10 body blocks)."""

    def __init__(self, in_size: int = 512, out_size: int = 512, parsing_ch: int = 19) -> None:
        super().__init__()
        min_feat = min(in_size, 32)

        def clip(c: int) -> int:
            return max(32, min(c, 256))

        encoder: list[nn.Module] = [ConvLayer(3, 64)]
        head = 64
        for _ in range(int(math.log2(in_size // min_feat))):
            encoder.append(ResidualBlock(clip(head), clip(head * 2), "down"))
            head *= 2
        self.encoder = nn.Sequential(*encoder)
        self.body = nn.Sequential(*(ResidualBlock(clip(head), clip(head)) for _ in range(10)))
        decoder = []
        for _ in range(int(math.log2(out_size // min_feat))):
            decoder.append(ResidualBlock(clip(head), clip(head // 2), "up"))
            head //= 2
        self.decoder = nn.Sequential(*decoder)
        self.out_img_conv = ConvLayer(clip(head), 3)  # the restored image; no caller reads it
        self.out_mask_conv = ConvLayer(clip(head), parsing_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.encoder(x)
        return self.out_mask_conv(self.decoder(feat + self.body(feat)))
