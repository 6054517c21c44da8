"""How far apart neighbouring annotations are: the gap hand-drawn masks leave along an occlusion
boundary, measured from the modal masks alone.

Along an occlusion boundary the two visible masks run side by side at a nearly constant distance
for the length of the boundary, while objects that merely lie near each other meet at a point or
an angle. So the boundary pixels of every mask are counted by their distance to each neighbour
(``contact_profile``) and the typical gap is the distance where that count peaks (``estimate_gap``).
Distances are chessboard distances in image pixels; the gap is the number of empty pixels between
two masks (0: they touch).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from amodalize.data.masks import Crop, decode_crop, grow, intersect_window, near_pairs
from amodalize.data.records import Dataset

# Gaps are looked for up to this many pixels; wider ones are not annotation gaps.
MAX_GAP = 10
# Images measured at most (spread evenly over the dataset), enough for a stable peak.
MAX_IMAGES = 400


@dataclass(frozen=True)
class GapEstimate:
    """The typical gap between neighbouring masks.

    gap: empty pixels between neighbours along occlusion boundaries (0: masks touch).
    profile: boundary pixels counted at each gap 0..MAX_GAP, over all neighbouring pairs.
    pairs: neighbouring pairs measured; images: images measured.
    """

    gap: int
    profile: tuple[int, ...]
    pairs: int
    images: int

    def to_json(self) -> dict:
        return {"gap": self.gap, "profile": list(self.profile), "pairs": self.pairs, "images": self.images}


def boundary(mask: np.ndarray) -> np.ndarray:
    """Foreground pixels with a background 4-neighbour (the image border counts as background)."""
    padded = np.pad(mask, 1)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def pair_profile(a: Crop, b: Crop, max_gap: int = MAX_GAP) -> np.ndarray:
    """Boundary pixels of ``a`` counted by their gap to ``b`` (``[max_gap + 1]`` int64, index = gap)."""
    out = np.zeros(max_gap + 1, dtype=np.int64)
    near = intersect_window(grow(b.window, max_gap + 1), a.window)
    if near is None:
        return out
    # b within reach of the near part of a: its nearest pixels lie at most max_gap + 1 further out
    window = grow(near, max_gap + 1)
    free = ~b.within(window)
    if free.all():
        return out
    dist = cv2.distanceTransform(free.astype(np.uint8), cv2.DIST_C, 3)
    k = max_gap + 1
    edge = boundary(a.within(window))[k:-k, k:-k]
    gaps = dist[k:-k, k:-k][edge].astype(np.int64) - 1
    gaps = gaps[(gaps >= 0) & (gaps <= max_gap)]
    return np.bincount(gaps, minlength=max_gap + 1)


def image_profile(crops: Sequence[Crop], max_gap: int = MAX_GAP) -> tuple[np.ndarray, int]:
    """The contact profile of one image's masks (both directions of every pair whose grown
    windows meet) and the number of pairs that contributed."""
    total = np.zeros(max_gap + 1, dtype=np.int64)
    pairs = 0
    for i, j in near_pairs(crops, max_gap + 1):
        profile = pair_profile(crops[i], crops[j], max_gap) + pair_profile(crops[j], crops[i], max_gap)
        if profile.any():
            total += profile
            pairs += 1
    return total, pairs


def gap_from_profile(profile: np.ndarray) -> int:
    """The gap where the contact profile peaks: the boundary length at each gap, the long parallel
    stretches of occlusion boundaries standing out over chance proximity."""
    return int(np.argmax(profile)) if profile.any() else 0


def modal_groups(dataset: Dataset) -> list[list[dict]]:
    """The visible-mask RLEs of each image's non-crowd instances."""
    return [[i.modal for i in insts if not i.iscrowd] for insts in dataset.by_image.values()]


def estimate_gap(images: Iterable[Sequence[dict]], max_images: int = MAX_IMAGES) -> GapEstimate:
    """The typical gap between neighbouring masks of a dataset, from the modal RLEs of each image
    (``images`` yields one list of RLEs per image; at most ``max_images`` spread evenly are used)."""
    groups = [g for g in images if len(g) > 1]
    if len(groups) > max_images:
        groups = [groups[k] for k in np.linspace(0, len(groups) - 1, max_images).round().astype(int)]
    total = np.zeros(MAX_GAP + 1, dtype=np.int64)
    pairs = 0
    for rles in groups:
        profile, n = image_profile([decode_crop(r) for r in rles])
        total += profile
        pairs += n
    return GapEstimate(gap_from_profile(total), tuple(int(v) for v in total), pairs, len(groups))
