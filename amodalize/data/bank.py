"""The instances that erasers are drawn from, and how an eraser is placed over a target.

Shared by training's sample recipe (``amodalize.train.partial``) and by calibration
(``amodalize.infer.calibrate``), which builds its synthetic occlusions the same way.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from joblib import Parallel, delayed

from amodalize.config import DataConfig
from amodalize.data.masks import EMPTY, Crop, Window, decode_crop, square_side
from amodalize.data.records import Dataset, Instance
from amodalize.errors import InputError


@dataclass
class InstanceBank:
    """The modal masks of every trainable instance, each decoded once into a bit-packed tight crop.

    packed[k]: np.packbits of the crop; shapes[k] = (h, w); origins[k] = (x0, y0) in image pixels;
    boxes[k] = COCO box (x, y, w, h); categories[k] = category id; image_files[image_index[k]]:
    the file name of the instance's image (None when the file gives none), image_sizes[...] its
    (height, width); fingerprint: hash of the masks.
    """

    packed: list[np.ndarray]
    shapes: np.ndarray
    origins: np.ndarray
    boxes: np.ndarray
    categories: np.ndarray
    image_index: np.ndarray
    image_files: list[str | None]
    image_sizes: np.ndarray
    fingerprint: str

    def __len__(self) -> int:
        return len(self.packed)

    def crop(self, k: int) -> Crop:
        """Instance k's modal mask as a Crop."""
        h, w = self.shapes[k]
        bits = np.unpackbits(self.packed[k], count=int(h * w)).reshape(h, w).astype(bool)
        return Crop(bits, int(self.origins[k, 0]), int(self.origins[k, 1]))


def _decode(instances: list[tuple[Instance, int]]) -> list[tuple]:
    out = []
    for inst, image in instances:
        crop = decode_crop(inst.modal)
        if crop is not EMPTY:
            mask = crop.mask
            out.append((np.packbits(mask), mask.shape, (crop.x0, crop.y0), inst.bbox, inst.category_id, image))
    return out


def build_bank(datasets: list[Dataset], workers: int = -1, chunk: int = 512) -> InstanceBank:
    """Decode every non-crowd, non-empty instance of ``datasets`` (in parallel with joblib)."""
    files: list[str | None] = []
    sizes: list[tuple[int, int]] = []
    index: dict[tuple[int, int], int] = {}
    for d, ds in enumerate(datasets):
        for image in ds.images:
            index[(d, image.id)] = len(files)
            files.append(image.file_name)
            sizes.append((image.height, image.width))
    instances = [(i, index[(d, i.image_id)]) for d, ds in enumerate(datasets) for i in ds.instances if not i.iscrowd]
    chunks = [instances[k : k + chunk] for k in range(0, len(instances), chunk)]
    if workers == 1 or len(chunks) <= 1:
        parts = [_decode(c) for c in chunks]
    else:
        parts = Parallel(n_jobs=workers)(delayed(_decode)(c) for c in chunks)
    rows = [row for part in parts for row in part]
    if not rows:
        paths = ", ".join(str(ds.path) for ds in datasets)
        raise InputError(paths, "no annotation has a visible mask (box-only or empty ones only): nothing to learn from")
    digest = hashlib.sha256()
    for inst, _ in instances:
        digest.update(f"{inst.image_id}:{inst.id}:{inst.modal['counts']};".encode())
    return InstanceBank(
        packed=[r[0] for r in rows],
        shapes=np.array([r[1] for r in rows], dtype=np.int64),
        origins=np.array([r[2] for r in rows], dtype=np.int64),
        boxes=np.array([r[3] for r in rows], dtype=np.float64),
        categories=np.array([r[4] for r in rows], dtype=np.float32),
        image_index=np.array([r[5] for r in rows], dtype=np.int64),
        image_files=files,
        image_sizes=np.array(sizes, dtype=np.int64).reshape(-1, 2),
        fingerprint=digest.hexdigest()[:16],
    )


def sample_window(
    bank: InstanceBank, k: int, rng: np.random.Generator, cfg: DataConfig, shift: bool
) -> tuple[Window, bool]:
    """The augmented square window around instance k's box and whether to flip it horizontally."""
    box = bank.boxes[k]
    side = square_side(box, cfg.enlarge_box, cfg.min_side_ratio)
    cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
    if shift:
        cx += rng.uniform(-cfg.shift, cfg.shift) * side
        cy += rng.uniform(-cfg.shift, cfg.shift) * side
    side /= rng.uniform(cfg.scale_min, cfg.scale_max)
    x0, y0, side_px = int(cx - side / 2), int(cy - side / 2), max(int(side), 1)
    return (x0, y0, x0 + side_px, y0 + side_px), bool(cfg.flip and rng.random() < 0.5)


def translate(mask: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """``out[y, x] = mask[y + dy, x + dx]``, zero where that falls outside."""
    h, w = mask.shape
    out = np.zeros_like(mask)
    ys, xs = slice(max(0, -dy), min(h, h - dy)), slice(max(0, -dx), min(w, w - dx))
    yt, xt = slice(max(0, dy), min(h, h + dy)), slice(max(0, dx), min(w, w + dx))
    if ys.stop > ys.start and xs.stop > xs.start:
        out[ys, xs] = mask[yt, xt]
    return out


def place_eraser(eraser: np.ndarray, target: np.ndarray, rng: np.random.Generator, cfg: DataConfig) -> np.ndarray:
    """Shift the eraser so that it cuts an accepted fraction of the target (last try if none)."""
    size = eraser.shape[0]
    target_area = np.count_nonzero(target) + 1e-5
    placed = eraser
    for _ in range(cfg.max_tries):
        overlap = rng.uniform(cfg.min_overlap, cfg.max_overlap)
        offx = rng.uniform(overlap - 1, 1 - overlap)
        offy = (1 - overlap / (1 - abs(offx))) * (1 if rng.random() < 0.5 else -1)
        placed = translate(eraser, int(offx * size), int(offy * size))
        cut = np.count_nonzero(placed & target) / target_area
        if cfg.min_cut_ratio <= cut < cfg.max_cut_ratio:
            break
    return placed
