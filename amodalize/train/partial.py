"""Self-supervised partial-completion samples for PCNet-M and PCNet-C (reference protocol §2.2-2.4, §5).

A target instance A is cropped around its box; a random instance B, cropped around its own box,
is placed over it as the eraser. PCNet-M, case 1 (probability ``eraser_front_prob``): input A
minus B, eraser B; case 2: input A, eraser B minus A; the network must output A in both cases.
PCNet-C: the pixels of A ∩ B are blanked in A's image crop and must be painted back.

Every sample is a pure function of ``(seed, global sample index)``, so training resumes
bit-for-bit and a sample does not depend on which process or DataLoader worker draws it.
"""

from __future__ import annotations

import numpy as np
import torch

from amodalize.config import AUTO, DataConfig
from amodalize.data.bank import InstanceBank, place_eraser, sample_window
from amodalize.data.images import ImageCache, crop_image
from amodalize.data.masks import Window, dilate_square, resample, square_side


def sample_patch(bank: InstanceBank, k: int, rng: np.random.Generator, cfg: DataConfig, shift: bool) -> np.ndarray:
    """Instance k cropped around its box with the training augmentation, ``[S, S]`` bool."""
    window, flip = sample_window(bank, k, rng, cfg, shift)
    patch = resample(bank.crop(k), window, cfg.input_size)
    return patch[:, ::-1] if flip else patch


def gap_pixels(gap: float | str, window: Window, size: int, rng: np.random.Generator) -> int:
    """A gap of ``gap`` image pixels (0.5-1.5x, drawn) in the pixels of a ``size`` patch of ``window``;
    draws nothing when ``gap`` is 0, so the reference recipe's samples stay as they were."""
    if gap == AUTO:
        raise ValueError("data.gap is 'auto': measure it (train.loop.resolve_gap) before drawing samples")
    if not gap:
        return 0
    return round(gap * rng.uniform(0.5, 1.5) * size / (window[2] - window[0]))


def draw_erasers(pool: np.ndarray, rng: np.random.Generator, cfg: DataConfig) -> list[int]:
    """``cfg.erasers`` eraser instance indices drawn from ``pool`` (for one, the same draw as a
    single ``rng.integers(len(pool))``)."""
    return [int(e) for e in pool[rng.integers(len(pool), size=cfg.erasers)]]


def make_sample(bank: InstanceBank, target: int, erasers: list[int], rng: np.random.Generator, cfg: DataConfig) -> dict:
    """One training sample: ``modal``, ``eraser``, ``target`` (uint8 ``[S, S]``) and ``category``.

    ``erasers`` holds ``cfg.erasers`` instance indices (or more); the first of them is placed over
    the target, and with ``cfg.erasers`` > 1 the next ones too, 1 to ``cfg.erasers`` in all (drawn).
    With ``cfg.gap`` (a number: resolve 'auto' first) the input leaves that many image pixels empty
    between an eraser and what remains visible of the target, as annotations of real occlusions do.
    """
    window, flip = sample_window(bank, target, rng, cfg, shift=True)
    a = resample(bank.crop(target), window, cfg.input_size)
    a = a[:, ::-1] if flip else a
    # nothing drawn for one eraser, so that the reference recipe's samples stay as they were
    count = 1 if cfg.erasers == 1 else int(rng.integers(1, cfg.erasers + 1))
    modal, erase = a, np.zeros_like(a)
    for eraser in erasers[:count]:
        b = place_eraser(sample_patch(bank, eraser, rng, cfg, shift=False), a, rng, cfg)
        front = rng.random() < cfg.eraser_front_prob
        k = gap_pixels(cfg.gap, window, cfg.input_size, rng)
        if front:
            modal = modal & ~dilate_square(b, k)  # case 1: B lies above A
        else:
            b = b & ~dilate_square(a, k)  # case 2: B lies below A
        erase = erase | b
    return {
        "modal": modal.astype(np.uint8),
        "eraser": erase.astype(np.uint8),
        "target": a.astype(np.uint8),
        "category": np.float32(bank.categories[target]),
    }


def make_content_sample(
    bank: InstanceBank, images: ImageCache, target: int, eraser: int, rng: np.random.Generator, cfg: DataConfig
) -> dict:
    """One PCNet-C sample: ``rgb`` (uint8 ``[3, S, S]``, the target's image crop in RGB order), ``hole``
    (A ∩ B) and ``modal`` (A minus B) as uint8 ``[S, S]``, and ``category``."""
    window, flip = sample_window(bank, target, rng, cfg, shift=True)
    a = resample(bank.crop(target), window, cfg.input_size)
    image = bank.image_index[target]
    pixels = images(bank.image_files[image], tuple(bank.image_sizes[image]))
    rgb = crop_image(pixels, window, cfg.input_size)[..., ::-1]
    if flip:
        a, rgb = a[:, ::-1], rgb[:, ::-1]
    b = place_eraser(sample_patch(bank, eraser, rng, cfg, shift=False), a, rng, cfg)
    return {
        "rgb": np.ascontiguousarray(rgb.transpose(2, 0, 1)),
        "hole": (a & b).astype(np.uint8),
        "modal": (a & ~b).astype(np.uint8),
        "category": np.float32(bank.categories[target]),
    }


def split_instances(bank: InstanceBank, cfg: DataConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Eligible instance indices split into (train, validation) targets, deterministically."""
    sides = np.array([square_side(b, cfg.enlarge_box, cfg.min_side_ratio) for b in bank.boxes])
    eligible = np.flatnonzero(sides >= cfg.min_box)
    if eligible.size < 2:
        raise ValueError(f"only {eligible.size} instance(s) large enough to train on (data.min_box {cfg.min_box})")
    order = np.random.default_rng([seed, 1]).permutation(eligible)
    n_val = max(1, int(round(cfg.val_fraction * len(order))))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


class PartialCompletionSet(torch.utils.data.Dataset):
    """Sample ``g`` (a global sample index) = target ``targets[perm_epoch[g % N]]`` with eraser and
    augmentation drawn from ``default_rng([seed, g])``; epochs are reshuffled per ``(seed, epoch)``.
    PCNet-M samples, or PCNet-C samples when ``images`` reads the image files."""

    def __init__(
        self,
        bank: InstanceBank,
        targets: np.ndarray,
        erasers: np.ndarray,
        cfg: DataConfig,
        seed: int,
        images: ImageCache | None = None,
    ):
        self.bank, self.targets, self.erasers, self.cfg, self.seed = bank, targets, erasers, cfg, seed
        self.images = images
        self._perm: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return 2**62  # indexed by global sample number; the sampler decides which

    def __getitem__(self, g: int) -> dict:
        epoch, pos = divmod(int(g), len(self.targets))
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, 2, epoch]).permutation(len(self.targets)))
        rng = np.random.default_rng([self.seed, 3, int(g)])
        target = int(self.targets[self._perm[1][pos]])
        erasers = draw_erasers(self.erasers, rng, self.cfg)
        if self.images is not None:
            return make_content_sample(self.bank, self.images, target, erasers[0], rng, self.cfg)
        return make_sample(self.bank, target, erasers, rng, self.cfg)


def validation_samples(
    bank: InstanceBank,
    val: np.ndarray,
    erasers: np.ndarray,
    cfg: DataConfig,
    seed: int,
    n: int,
    images: ImageCache | None = None,
) -> dict:
    """A fixed batch of ``n`` samples with held-out targets, stacked as tensors (PCNet-C with ``images``)."""
    samples = []
    for k in range(n):
        rng = np.random.default_rng([seed, 4, k])
        target = int(val[k % len(val)])
        drawn = draw_erasers(erasers, rng, cfg)
        if images is not None:
            samples.append(make_content_sample(bank, images, target, drawn[0], rng, cfg))
        else:
            samples.append(make_sample(bank, target, drawn, rng, cfg))
    return torch.utils.data.default_collate(samples)
