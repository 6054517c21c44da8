"""PCNet-M: the UNet that completes a target mask behind an eraser (reference protocol §2.5, §3).

Input packing, foreground probabilities and the import of the reference implementation's
released checkpoints (``*.pth.tar`` with ``module.``-prefixed keys) live here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

import torch

from amodalize.config import CATEGORY_INPUTS
from amodalize.errors import InputError
from amodalize.models.unet import UNet

# Reference parameter names (classic UNet parts) -> ours.
_REFERENCE_KEYS = [
    (re.compile(r"^inc\.conv\.conv\."), "inc."),
    (re.compile(r"^(down\d)\.mpconv\.1\.conv\."), r"\1.1."),
    (re.compile(r"^(up\d)\.conv\.conv\."), r"\1.conv."),
    (re.compile(r"^outc\.conv\."), "outc."),
]


# What a checkpoint that does not say how it takes categories was trained with (every amodalize
# checkpoint before the setting existed, and the reference's).
LEGACY_CATEGORY_INPUT = "multiply"


def category_factor(categories: str, ids: torch.Tensor) -> torch.Tensor | float:
    """What multiplies the visible-mask channel under a model's ``categories`` input: the ids
    ``[B]`` for 'multiply', 1 for 'none'."""
    if categories not in CATEGORY_INPUTS:
        raise ValueError(f"unknown category input {categories!r}; choose from {', '.join(CATEGORY_INPUTS)}")
    return ids if categories == "multiply" else 1.0


def pack_input(modal: torch.Tensor, eraser: torch.Tensor, category: torch.Tensor | float = 1.0) -> torch.Tensor:
    """Network input ``[B, 2, H, W]``: the modal mask with eraser pixels removed, times
    ``category``, and the eraser.

    Args:
        modal (Tensor[B, H, W]): 0/1 target mask.
        eraser (Tensor[B, H, W]): 0/1 eraser mask.
        category (Tensor[B] or float): multiplier of the mask channel (``category_factor``).
    """
    modal, eraser = modal.float(), eraser.float()
    if isinstance(category, torch.Tensor):
        category = category.float().view(-1, 1, 1)
    return torch.stack([modal * (1 - eraser) * category, eraser], dim=1)


def foreground_probability(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """P(foreground) ``[B, H, W]`` from the 2-class logits of ``model(x)``."""
    return torch.softmax(model(x).float(), dim=1)[:, 1]


def load_checkpoint(path: str | Path) -> object:
    """``torch.load`` of tensors only (``weights_only=True``): a checkpoint cannot run code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(path, "no such checkpoint") from None
    except Exception as e:  # torch raises many kinds for a bad file
        raise InputError(path, f"not a loadable PyTorch checkpoint ({type(e).__name__})") from None


def reference_state_dict(path: str | Path, model: UNet) -> dict[str, torch.Tensor]:
    """Load a reference PCNet-M checkpoint into ``model``'s key names, checking every key and shape."""
    ckpt = load_checkpoint(path)
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise InputError(path, "holds no state_dict")
    ours = {}
    for key, value in state.items():
        name = key.removeprefix("module.")
        for pattern, repl in _REFERENCE_KEYS:
            name = pattern.sub(repl, name)
        ours[name] = value
    expected = model.state_dict()
    missing, unknown = sorted(set(expected) - set(ours)), sorted(set(ours) - set(expected))
    if missing or unknown:
        raise InputError(path, f"keys do not match the UNet (missing {missing[:3]}, unexpected {unknown[:3]})")
    for name, value in ours.items():
        if tuple(value.shape) != tuple(expected[name].shape):
            raise InputError(
                path, f"{name} has shape {tuple(value.shape)}, the UNet expects {tuple(expected[name].shape)}"
            )
    return ours


class LoadedPCNetM(NamedTuple):
    """A loaded PCNet-M: the model in eval mode, its input size, its kind ('amodalize' or
    'reference'), for calibrated amodalize checkpoints the calibration record of its training
    data's gap and any made at other gaps (``gap_calibrations``: thresholds and dilation only), how
    it takes categories (CATEGORY_INPUTS) and the category ids it was trained on, where recorded."""

    model: UNet
    input_size: int
    kind: str
    calibration: dict | None = None
    gap_calibrations: tuple[dict, ...] = ()
    categories: str = LEGACY_CATEGORY_INPUT
    categories_seen: tuple[int, ...] | None = None


def load_pcnet_m(path: str | Path) -> LoadedPCNetM:
    """A PCNet-M checkpoint.

    Accepts ``amodalize train`` checkpoints (kind 'amodalize': widen and input size from their
    config) and the reference's released ``*.pth.tar`` (kind 'reference': the paper's UNet at 256).
    """
    ckpt = load_checkpoint(path)
    if isinstance(ckpt, dict) and ckpt.get("kind") == "pcnet-c":
        raise InputError(path, "is a PCNet-C (content) checkpoint; a PCNet-M checkpoint is needed here")
    if isinstance(ckpt, dict) and "model" in ckpt and "config" in ckpt:
        cfg = ckpt["config"]
        model = UNet(2, 2, widen=cfg["model"]["widen"])
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError as e:
            raise InputError(path, f"weights do not fit the UNet of its config ({str(e).splitlines()[0]})") from None
        return LoadedPCNetM(
            model.eval(),
            int(cfg["data"]["input_size"]),
            "amodalize",
            ckpt.get("calibration"),
            tuple(ckpt.get("gap_calibrations", ())),
            cfg["model"].get("categories", LEGACY_CATEGORY_INPUT),
            tuple(ckpt["categories_seen"]) if ckpt.get("categories_seen") is not None else None,
        )
    model = UNet(2, 2, widen=2)
    model.load_state_dict(reference_state_dict(path, model))
    return LoadedPCNetM(model.eval(), 256, "reference")
