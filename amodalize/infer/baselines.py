"""The paper's model-free baselines (reference protocol §4.3 ordering, §4.4 amodal)."""

from __future__ import annotations

import numpy as np

from amodalize.data.masks import EMPTY, Crop, centroid_y, convex_hull, grow, intersect_window, tight, union_within
from amodalize.infer.order import ancestors, order_from_increments, order_from_sides

Order = tuple[np.ndarray, np.ndarray]


def order_area(crops: list[Crop], pairs: list[tuple[int, int]], front: str = "smaller") -> Order:
    """Area: the smaller (COCOA) or larger (KINS) visible mask is in front.

    Ties put j in front for 'smaller' and i for 'larger', as the reference does.
    """
    if front not in ("smaller", "larger"):
        raise ValueError(f"front must be 'smaller' or 'larger', got {front!r}")
    areas = [c.area for c in crops]
    decisions = []
    for i, j in pairs:
        a, b = areas[i], areas[j]
        i_front = a > b if front == "larger" else a < b
        if a == b:
            i_front = front == "larger"
        s = abs(a - b) / max(a + b, 1)
        decisions.append((i, j, s) if i_front else (j, i, s))
    return order_from_sides(decisions, len(crops))


def order_yaxis(crops: list[Crop], pairs: list[tuple[int, int]]) -> Order:
    """Y-axis: the mask whose centroid lies lower in the image is in front (tie: i)."""
    ys = [centroid_y(c) if c is not EMPTY else 0.0 for c in crops]
    decisions = []
    for i, j in pairs:
        scale = (crops[i].mask.shape[0] + crops[j].mask.shape[0]) / 2
        s = min(1.0, abs(ys[i] - ys[j]) / max(scale, 1.0))
        decisions.append((i, j, s) if ys[i] >= ys[j] else (j, i, s))
    return order_from_sides(decisions, len(crops))


def convex_increments(crops: list[Crop], hulls: list[Crop], pairs: list[tuple[int, int]]) -> np.ndarray:
    """``occ[t, e] = |(hull_t \\ M_t) ∩ M_e|`` ``[N, N]`` for both directions of every pair: how far
    each mask's convex hull grows into the other, in pixels."""
    occ = np.zeros((len(crops), len(crops)), dtype=np.float64)
    for i, j in pairs:
        for t, e in ((i, j), (j, i)):
            w = hulls[t].window
            occ[t, e] = np.count_nonzero(hulls[t].mask & ~crops[t].within(w) & crops[e].within(w))
    return occ


def local_convex_increments(crops: list[Crop], pairs: list[tuple[int, int]], reach: int = 1) -> np.ndarray:
    """Like ``convex_increments`` but with each mask's hull taken only near the contact: inside the
    overlap of the two boxes grown by a quarter of the smaller object's size, so that the shape of
    the boundary where the two meet decides, not concavities far away."""
    occ = np.zeros((len(crops), len(crops)), dtype=np.float64)
    for i, j in pairs:
        margin = max(reach, round(0.25 * np.sqrt(min(crops[i].area, crops[j].area))))
        window = intersect_window(grow(crops[i].window, margin), grow(crops[j].window, margin))
        if window is None:
            continue
        for t, e in ((i, j), (j, i)):
            near = tight(crops[t].within(window), window[0], window[1])
            if near is EMPTY:
                continue
            hull = convex_hull(near)
            occ[t, e] = np.count_nonzero(hull.mask & ~near.mask & crops[e].within(hull.window))
    return occ


def order_convex(crops: list[Crop], hulls: list[Crop], pairs: list[tuple[int, int]]) -> Order:
    """Convex: whoever's hull grows more into the other is behind it."""
    return order_from_increments(convex_increments(crops, hulls, pairs), pairs)


def amodal_convex_r(crops: list[Crop], hulls: list[Crop], order: np.ndarray) -> list[Crop]:
    """Convex^R: ``modal ∪ (hull ∩ union of ancestors)``, the hull restricted to what hides it."""
    out = []
    for i, (crop, hull) in enumerate(zip(crops, hulls)):
        above = ancestors(order, i)
        if crop is EMPTY or not above:
            out.append(crop)
            continue
        w = hull.window
        cover = union_within([crops[a] for a in above], w)
        out.append(Crop(crop.within(w) | (hull.mask & cover), w[0], w[1]))
    return out
