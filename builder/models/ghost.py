"""GHOST's AEI-Net generator (FaceShifter with a U-Net attribute encoder), 'unet' backbone.

Parameter names and shapes follow ai-forever/ghost ``network/AEI_Net.py`` and
``network/AADLayer.py``, so the official ``G_unet_{1block,2blocks,3blocks}.pth`` raw
state dicts (``encoder.*``, ``generator.*``) load unchanged into
``AEINet(num_blocks=N)`` (upstream: ``AEI_Net('unet', num_blocks=N, c_id=512)``).

Input: the target face, RGB in [-1, 1], 256 x 256; the source identity, a raw 512-d
iresnet100 vector. Output: ``(image, attributes)`` like upstream; the image is tanh, RGB
in [-1, 1], 256 x 256.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

C_ID = 512
CROP_SIZE = 256
_SLOPE = 0.1  # LeakyReLU slope of every encoder layer


def _up2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


class _Down(nn.Sequential):
    """conv4x4 stride 2 -> BN -> LeakyReLU; a Sequential so its keys read ``convK.0/1``."""

    def __init__(self, cin: int, cout: int):
        super().__init__(
            nn.Conv2d(cin, cout, kernel_size=4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.LeakyReLU(_SLOPE),
        )


class _Up(nn.Module):
    """Transposed conv4x4 stride 2 -> BN -> LeakyReLU, then concatenated with the skip (U-Net)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.deconv = nn.ConvTranspose2d(cin, cout, kernel_size=4, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.bn(self.deconv(x)), _SLOPE)
        return torch.cat((x, skip), dim=1)


class AttributeEncoder(nn.Module):
    """Multi-level attribute encoder: 256 -> 2 px and back up, eight attribute maps (2 ... 256 px)."""

    def __init__(self):
        super().__init__()
        widths = (3, 32, 64, 128, 256, 512, 1024, 1024)
        for i in range(7):
            setattr(self, f"conv{i + 1}", _Down(widths[i], widths[i + 1]))
        # U-Net: each decoder input is the previous output concatenated with its skip.
        ups = ((1024, 1024), (2048, 512), (1024, 256), (512, 128), (256, 64), (128, 32))
        for i, (cin, cout) in enumerate(ups):
            setattr(self, f"deconv{i + 1}", _Up(cin, cout))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feats = []
        for i in range(1, 8):
            x = getattr(self, f"conv{i}")(x)
            feats.append(x)  # 128, 64, 32, 16, 8, 4, 2 px
        attrs = [feats[-1]]
        for i in range(1, 7):
            attrs.append(getattr(self, f"deconv{i}")(attrs[-1], feats[-1 - i]))
        attrs.append(_up2(attrs[-1]))
        return tuple(attrs)


class AADLayer(nn.Module):
    """Adaptive attentional denormalisation: blend attribute- and identity-modulated features by a learnt mask."""

    def __init__(self, c_x: int, c_attr: int, c_id: int):
        super().__init__()
        self.c_x = c_x
        self.conv1 = nn.Conv2d(c_attr, c_x, kernel_size=1)
        self.conv2 = nn.Conv2d(c_attr, c_x, kernel_size=1)
        self.fc1 = nn.Linear(c_id, c_x)
        self.fc2 = nn.Linear(c_id, c_x)
        self.norm = nn.InstanceNorm2d(c_x, affine=False)
        self.conv_h = nn.Conv2d(c_x, 1, kernel_size=1)

    def forward(self, h_in: torch.Tensor, z_attr: torch.Tensor, z_id: torch.Tensor) -> torch.Tensor:
        h = self.norm(h_in)
        attr = self.conv1(z_attr) * h + self.conv2(z_attr)
        gamma_id = self.fc1(z_id).reshape(-1, self.c_x, 1, 1)
        beta_id = self.fc2(z_id).reshape(-1, self.c_x, 1, 1)
        ident = gamma_id * h + beta_id
        m = torch.sigmoid(self.conv_h(h))
        return (1 - m) * attr + m * ident


class _AADChain(nn.ModuleList):
    """Repeated (AADLayer, ReLU, conv3x3) triples; a ModuleList keeps upstream's numeric keys (0, 2, 3, 5, ...)."""

    def __init__(self, widths: list[tuple[int, int]], c_attr: int, c_id: int):
        layers: list[nn.Module] = []
        for cin, cout in widths:
            layers += [AADLayer(cin, c_attr, c_id), nn.ReLU(), nn.Conv2d(cin, cout, 3, padding=1, bias=False)]
        super().__init__(layers)

    def forward(self, h: torch.Tensor, z_attr: torch.Tensor, z_id: torch.Tensor) -> torch.Tensor:
        for i in range(0, len(self), 3):
            h = self[i + 2](self[i + 1](self[i](h, z_attr, z_id)))
        return h


class AADResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, c_attr: int, c_id: int, num_blocks: int):
        super().__init__()
        self.cin, self.cout = cin, cout
        widths = [(cin, cin)] * (num_blocks - 1) + [(cin, cout)]
        self.add_blocks = _AADChain(widths, c_attr, c_id)
        if cin != cout:
            self.last_add_block = _AADChain([(cin, cout)], c_attr, c_id)

    def forward(self, h: torch.Tensor, z_attr: torch.Tensor, z_id: torch.Tensor) -> torch.Tensor:
        x = self.add_blocks(h, z_attr, z_id)
        shortcut = self.last_add_block(h, z_attr, z_id) if self.cin != self.cout else h
        return x + shortcut


class AADGenerator(nn.Module):
    def __init__(self, c_id: int = C_ID, num_blocks: int = 2):
        super().__init__()
        self.up1 = nn.ConvTranspose2d(c_id, 1024, kernel_size=2, stride=1, padding=0)  # 1x1 identity -> 2x2
        # (cin, cout, attribute channels) per level, 2 px to 256 px, for the U-Net encoder.
        specs = (
            (1024, 1024, 1024),
            (1024, 1024, 2048),
            (1024, 1024, 1024),
            (1024, 512, 512),
            (512, 256, 256),
            (256, 128, 128),
            (128, 64, 64),
            (64, 3, 64),
        )
        for i, (cin, cout, c_attr) in enumerate(specs):
            setattr(self, f"AADBlk{i + 1}", AADResBlock(cin, cout, c_attr, c_id, num_blocks))

    def forward(self, z_attr: tuple[torch.Tensor, ...], z_id: torch.Tensor) -> torch.Tensor:
        m = self.up1(z_id.reshape(z_id.shape[0], -1, 1, 1))
        for i in range(1, 8):
            m = _up2(getattr(self, f"AADBlk{i}")(m, z_attr[i - 1], z_id))
        return torch.tanh(self.AADBlk8(m, z_attr[7], z_id))


class AEINet(nn.Module):
    def __init__(self, num_blocks: int = 2, c_id: int = C_ID):
        super().__init__()
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be at least 1, got {num_blocks}")
        self.encoder = AttributeEncoder()
        self.generator = AADGenerator(c_id, num_blocks)

    def forward(self, target: torch.Tensor, z_id: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        attrs = self.encoder(target)
        return self.generator(attrs, z_id), attrs
