"""PCNet-C: paints the content of an erased region (reference protocol §5).

The generator is a partial-convolution UNet (Liu et al., "Image Inpainting for Irregular Holes
Using Partial Convolutions", 2018); the discriminator a spectral-norm PatchGAN on (image, erased
modal). Images enter normalised with the ImageNet mean and standard deviation, as in the reference.

Masks are carried as one channel per feature map: ``valid[B, 1, H, W]`` is 1 where the features
were computed from at least one valid input pixel. That is exact for the reference's per-channel
masks, whose channels only ever differ between the two halves of a skip concatenation.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from amodalize.errors import InputError
from amodalize.models.pcnet_m import LEGACY_CATEGORY_INPUT, load_checkpoint

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(rgb: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] ``[B, 3, H, W]`` to ImageNet-normalised values."""
    mean = rgb.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = rgb.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (rgb - mean) / std


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """Inverse of ``normalize``, clamped to [0, 1]."""
    mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x * std + mean).clamp(0, 1)


def pack_content_input(
    rgb: torch.Tensor, hole: torch.Tensor, modal: torch.Tensor, category: torch.Tensor | float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Generator input ``[B, 4, S, S]`` (normalised RGB and modal x category, both zero in the hole),
    the valid mask ``[B, 1, S, S]`` and the normalised full image ``[B, 3, S, S]``.

    Args:
        rgb (Tensor[B, 3, S, S]): uint8 or [0, 1] float RGB crop.
        hole (Tensor[B, S, S]): 0/1, the pixels to paint.
        modal (Tensor[B, S, S]): 0/1 visible mask of the object (its erased modal mask).
        category (Tensor[B] or float): multiplier of the modal channel (``pcnet_m.category_factor``).
    """
    image = normalize(rgb.float() / 255 if rgb.dtype == torch.uint8 else rgb.float())
    valid = 1 - hole.float().unsqueeze(1)
    if isinstance(category, torch.Tensor):
        category = category.float().view(-1, 1, 1, 1)
    x = torch.cat([image, modal.float().unsqueeze(1) * category], dim=1) * valid
    return x, valid, image


class PartialConv2d(nn.Module):
    """A convolution that sees only valid pixels: ``W·(X ⊙ M) · sum(1)/sum(M) + b`` where the window
    holds any valid input, else 0; the output mask is 1 exactly there.

    Args:
        in_channels, out_channels, kernel_size, stride (int): as ``nn.Conv2d`` (padding k // 2).
        bias (bool): add a bias (only at valid outputs).

    forward(parts) takes ``[(x, valid), ...]`` input groups that are concatenated along channels,
    each ``x[B, C_g, H, W]`` with its own ``valid[B, 1, H, W]``, and returns ``(y, valid_out)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, bias: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=bias)
        self.register_buffer("window", torch.ones(1, 1, kernel_size, kernel_size), persistent=False)

    def forward(self, parts: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([p * m for p, m in parts], dim=1)
        with torch.no_grad(), torch.autocast(x.device.type, enabled=False):  # counts need float32
            count = sum(p.shape[1] * m.float() for p, m in parts)  # valid input channels per pixel
            covered = F.conv2d(count, self.window, stride=self.conv.stride, padding=self.conv.padding)
            valid = (covered > 0).to(x.dtype)
            scale = self.conv.in_channels * self.window.numel() / covered.clamp(min=1) * valid
        y = F.conv2d(x, self.conv.weight, None, self.conv.stride, self.conv.padding) * scale.to(x.dtype)
        if self.conv.bias is not None:
            y = y + self.conv.bias.view(1, -1, 1, 1) * valid.to(y.dtype)
        return y, valid


class _Block(nn.Module):
    """Partial convolution, then optional BatchNorm and activation."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, bn: bool, act: nn.Module | None):
        super().__init__()
        self.pconv = PartialConv2d(cin, cout, k, stride, bias=not bn)
        self.bn = nn.BatchNorm2d(cout) if bn else nn.Identity()
        self.act = act or nn.Identity()

    def forward(self, parts: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        y, valid = self.pconv(parts)
        return self.act(self.bn(y)), valid


class PConvUNet(nn.Module):
    """The PCNet-C generator: a partial-convolution UNet (reference: PConvUNet, layer_size 7).

    Args:
        in_channels (int): input channels (PCNet-C: 4 = RGB + modal, times the category under 'multiply').
        out_channels (int): output channels (3 = RGB).
        base (int): channels of the first level; level k has ``min(base * 2**k, max_width)``.
        depth (int): levels; encoder kernels 7, 5, 5, then 3 (stride 2 each), so inputs must be
            multiples of ``2**depth``. The reference (base 64, depth 7) has ~25.8M parameters.
        max_width (int): channel cap.

    forward(x: Tensor[B, in, S, S], valid: Tensor[B, 1, S, S]) -> Tensor[B, out, S, S], in the
    input's normalised colour space.
    """

    def __init__(
        self, in_channels: int = 4, out_channels: int = 3, *, base: int = 64, depth: int = 7, max_width: int = 512
    ) -> None:
        super().__init__()
        widths = [min(base * 2**k, max_width) for k in range(depth)]
        kernels = [7, 5, 5] + [3] * max(depth - 3, 0)
        self.encoder = nn.ModuleList(
            _Block(in_channels if k == 0 else widths[k - 1], widths[k], kernels[k], 2, bn=k > 0, act=nn.ReLU())
            for k in range(depth)
        )
        # decoder k: upsampled level k joined with the skip from level k-1 (the input for k = 0)
        self.decoder = nn.ModuleList(
            _Block(widths[k] + widths[k - 1], widths[k - 1], 3, 1, bn=True, act=nn.LeakyReLU(0.2))
            if k > 0
            else _Block(widths[0] + in_channels, out_channels, 3, 1, bn=False, act=None)
            for k in range(depth)
        )

    @property
    def size_multiple(self) -> int:
        """Input sides must be multiples of this (each level halves them)."""
        return 2 ** len(self.encoder)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        skips = [(x, valid)]
        h = (x, valid)
        for block in self.encoder:
            h = block([h])
            skips.append(h)
        for k in reversed(range(len(self.decoder))):
            up = (F.interpolate(h[0], scale_factor=2, mode="nearest"), F.interpolate(h[1], scale_factor=2))
            h = self.decoder[k]([up, skips[k]])
        return h[0]


class PatchDiscriminator(nn.Module):
    """The PCNet-C discriminator: five 4x4 spectral-norm convolutions without bias (strides 2, 2, 2,
    1, 1; LeakyReLU 0.2), one real/fake logit per patch (reference: InpaintDiscriminator, 2.76M
    parameters at base 64; the reference's sigmoid is folded into the loss).

    Args:
        in_channels (int): 4 = RGB + erased modal.
        base (int): channels of the first convolution (then x2, x4, x8).

    forward(x: Tensor[B, in, S, S]) -> Tensor[B, 1, S/8 - 2, S/8 - 2] logits.
    """

    def __init__(self, in_channels: int = 4, *, base: int = 64) -> None:
        super().__init__()
        widths = [in_channels, base, base * 2, base * 4, base * 8, 1]
        strides = [2, 2, 2, 1, 1]
        layers: list[nn.Module] = []
        for k, stride in enumerate(strides):
            layers.append(
                nn.utils.parametrizations.spectral_norm(nn.Conv2d(widths[k], widths[k + 1], 4, stride, 1, bias=False))
            )
            if k < len(strides) - 1:
                layers.append(nn.LeakyReLU(0.2))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class VGG16Features(nn.Module):
    """VGG16's first three blocks, laid out as torchvision's ``vgg16().features[:17]`` so that its
    state dict (``features.N.weight``) loads; returns the pool1, pool2 and pool3 feature maps."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for n_convs, width in ((2, 64), (2, 128), (3, 256)):
            for _ in range(n_convs):
                layers += [nn.Conv2d(cin, width, 3, padding=1), nn.ReLU(inplace=True)]
                cin = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for layer in self.features:
            x = layer(x)
            if isinstance(layer, nn.MaxPool2d):
                out.append(x)
        return out


def load_vgg16(path: str | Path) -> VGG16Features:
    """VGG16Features from a local torchvision ``vgg16`` state dict (``features.*`` keys; others ignored)."""
    state = load_checkpoint(path)
    state = state.get("state_dict", state) if isinstance(state, dict) else None
    model = VGG16Features()
    wanted = model.state_dict()
    if not isinstance(state, dict) or not set(wanted) <= set(state):
        raise InputError(path, "is not a VGG16 state dict (needs torchvision's features.0 ... features.14 weights)")
    try:
        model.load_state_dict({k: state[k] for k in wanted})
    except RuntimeError as e:
        raise InputError(path, f"weights do not fit VGG16 ({str(e).splitlines()[-1].strip()})") from None
    return model.eval()


def build_generator(model_cfg: dict) -> PConvUNet:
    """The generator of a ContentConfig ``model`` section (as a dict)."""
    return PConvUNet(4, 3, base=model_cfg["base"], depth=model_cfg["depth"], max_width=model_cfg["max_width"])


class LoadedPCNetC(NamedTuple):
    """A loaded PCNet-C: the generator in eval mode, its input size and how it takes categories
    (``model.categories``)."""

    generator: PConvUNet
    input_size: int
    categories: str


def load_pcnet_c(path: str | Path) -> LoadedPCNetC:
    """A PCNet-C checkpoint of ``amodalize train --model pcnet-c``."""
    ckpt = load_checkpoint(path)
    if not (isinstance(ckpt, dict) and ckpt.get("kind") == "pcnet-c"):
        raise InputError(path, "is not a PCNet-C checkpoint (train one with `amodalize train --model pcnet-c`)")
    generator = build_generator(ckpt["config"]["model"])
    try:
        generator.load_state_dict(ckpt["generator"])
    except RuntimeError as e:
        raise InputError(path, f"weights do not fit the generator of its config ({str(e).splitlines()[0]})") from None
    cfg = ckpt["config"]
    return LoadedPCNetC(
        generator.eval(), int(cfg["data"]["input_size"]), cfg["model"].get("categories", LEGACY_CATEGORY_INPUT)
    )
