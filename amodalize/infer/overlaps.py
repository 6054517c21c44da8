"""What annotators drew over each other: overlapping masks, the order their nesting gives, and the
visible partition the rest of conversion works on.

COCOA's and KINS's visible masks partition the image; real COCO's do not. COCO annotators outline
each object alone, so masks overlap: a fork's mask lies inside the dining table's (the table was
outlined around it), a person's is drawn through the bicycle in front, an outline strays a few
pixels into its neighbour. A pair of masks that share pixels is

    nested       the smaller lies at least NESTED inside the other: it is in front (its container
                 was drawn around it; an object hidden behind is rarely outlined at all);
    overlapping  it shares more than SLIVER of the smaller mask but less than NESTED: which one is
                 in front is decided with the network (``infer.convert``), the shared pixels going
                 to the mask more of which lies inside the other while the order is decided;
    sliver       it shares less than SLIVER of the smaller mask: a sloppy boundary, touching and
                 not occlusion, ordered as any touching pair on the masks as drawn.

Each shared pixel then goes to the object in front (``partition``), so that PCNet-M sees visible
parts that do not overlap, as in training, and a back object's eraser holds the object in front.
A file whose masks do not overlap has no pair here and is converted exactly as before.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from amodalize.data.masks import EMPTY, Crop, intersect_window, near_pairs, tight

# Share of the smaller mask inside the other from which a pair is nested (``docs/measurements.md``,
# "Masks drawn over each other").
NESTED = 0.9
# Share below which the shared pixels are a boundary sliver.
SLIVER = 0.05
KINDS = ("nested", "overlapping", "sliver")
# The confidence of a nested pair's edge: the contained object was in front in all 79 nested pairs
# of seven sets of scenes drawn as annotators draw; Laplace's rule of succession gives 80/81
# (``docs/measurements.md``, "Masks drawn over each other").
NESTED_CONFIDENCE = 0.99
# The fused ordering is surer of pairs drawn over each other than it is right (seven such sets:
# mean confidence 0.92 at 80% right on overlapping pairs, 0.87 at 78% on slivers): their edges'
# logits are divided by these temperatures, fitted by likelihood on those sets (same page).
TEMPERATURE = {"overlapping": 2.5, "sliver": 1.75}


@dataclass(frozen=True)
class Overlap:
    """Masks ``i`` and ``j`` share ``pixels`` pixels: ``share_i`` of i's mask, ``share_j`` of j's."""

    i: int
    j: int
    pixels: int
    share_i: float
    share_j: float

    @property
    def kind(self) -> str:
        """'nested', 'overlapping' or 'sliver' (module docstring)."""
        share = max(self.share_i, self.share_j)
        return "nested" if share >= NESTED else "sliver" if share < SLIVER else "overlapping"

    @property
    def inner(self) -> int:
        """The mask more of which lies inside the other (the contained one of a nested pair)."""
        return self.i if self.share_i >= self.share_j else self.j

    @property
    def outer(self) -> int:
        """The other mask of the pair."""
        return self.j if self.inner == self.i else self.i


def find_overlaps(crops: list[Crop]) -> list[Overlap]:
    """Every pair of masks that share a pixel, ``i < j`` (boxes compared first, pixels only where
    the boxes meet)."""
    found = []
    for i, j in near_pairs(crops, 0):
        window = intersect_window(crops[i].window, crops[j].window)
        if window is None:
            continue
        pixels = int(np.count_nonzero(crops[i].within(window) & crops[j].within(window)))
        if pixels:
            found.append(Overlap(i, j, pixels, pixels / crops[i].area, pixels / crops[j].area))
    return found


def count_kinds(overlaps: list[Overlap]) -> dict[str, int]:
    """How many pairs of each kind, every kind present (0 when none)."""
    counts = Counter(o.kind for o in overlaps)
    return {kind: counts[kind] for kind in KINDS}


def tempered(confidence: float, kind: str) -> float:
    """An edge confidence in [0.5, 1) of a pair of ``kind`` brought to how often such edges are right."""
    if kind not in TEMPERATURE:
        return confidence
    c = min(max(confidence, 0.5), 1 - 1e-6)
    return float(1.0 / (1.0 + ((1 - c) / c) ** (1 / TEMPERATURE[kind])))


def partition(crops: list[Crop], fronts: list[tuple[int, int]]) -> list[Crop]:
    """The masks with every shared pixel of each ``(front, back)`` pair taken from the back one."""
    out = list(crops)
    for front, back in fronts:
        if out[back] is EMPTY:
            continue
        window = out[back].window
        mask = out[back].mask & ~crops[front].within(window)
        out[back] = tight(mask, window[0], window[1])
    return out


def drawn_fronts(overlaps: list[Overlap]) -> list[tuple[int, int]]:
    """The ``(front, back)`` split the order is decided on: the mask more of which lies inside the
    other in front (certain for nested pairs, a first guess for overlapping ones); a boundary
    sliver stays in both masks, as drawn (measured better: ``docs/measurements.md``)."""
    return [(o.inner, o.outer) for o in overlaps if o.kind != "sliver"]


def decided_fronts(overlaps: list[Overlap], order: np.ndarray) -> list[tuple[int, int]]:
    """The ``(front, back)`` of each overlapping pair as ``order`` (``[N, N]``, +1 where the row
    occludes the column) has it, or as drawn (the inner mask in front) where it has no order."""
    fronts = []
    for o in overlaps:
        if order[o.i, o.j] != 0:
            fronts.append((o.i, o.j) if order[o.i, o.j] == 1 else (o.j, o.i))
        else:
            fronts.append((o.inner, o.outer))
    return fronts
