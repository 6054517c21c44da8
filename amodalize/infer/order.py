"""The pairwise occlusion graph: a matrix ``order[N, N]`` of int8 where ``order[i, j] = +1``
means instance i occludes (is in front of) j, ``-1`` the reverse and 0 no order. It is
antisymmetric; cycles are allowed, so it is never reduced to one depth index.
"""

from __future__ import annotations

import numpy as np

from amodalize.data.masks import Crop, dilate_square, resample, resample_linear, union_within


def order_from_increments(occ: np.ndarray, pairs: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Order and edge scores from directed increments ``occ[t, e]`` (growth of t behind e).

    The instance that grows more behind the other is the occludee (reference protocol §4.2 step 3);
    both zero or an exact tie give no order. The score is ``|occ_ij - occ_ji| / (occ_ij + occ_ji)``.
    """
    n = occ.shape[0]
    order = np.zeros((n, n), dtype=np.int8)
    score = np.zeros((n, n), dtype=np.float32)
    for i, j in pairs:
        a, b = float(occ[i, j]), float(occ[j, i])
        if a == b:
            continue
        sign = 1 if a < b else -1
        order[i, j], order[j, i] = sign, -sign
        score[i, j] = score[j, i] = abs(a - b) / (a + b)
    return order, score


def order_from_sides(front: list[tuple[int, int, float]], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Order and scores from ``(occluder, occludee, score)`` decisions."""
    order = np.zeros((n, n), dtype=np.int8)
    score = np.zeros((n, n), dtype=np.float32)
    for a, b, s in front:
        order[a, b], order[b, a] = 1, -1
        score[a, b] = score[b, a] = s
    return order, score


def edges(order: np.ndarray, score: np.ndarray) -> list[tuple[int, int, float]]:
    """The graph as ``(occluder, occludee, score)`` index triples."""
    return [(int(i), int(j), float(score[i, j])) for i, j in zip(*np.nonzero(order == 1))]


def has_cycle(order: np.ndarray) -> bool:
    """True when following "occludes" edges can return to where it started."""
    remaining = order == 1
    alive = np.ones(len(order), dtype=bool)
    while alive.any():  # peel instances that occlude nothing still alive (Kahn's algorithm)
        sinks = alive & ~(remaining & alive[None, :]).any(axis=1)
        if not sinks.any():
            return True
        alive &= ~sinks
    return False


def occluders(order: np.ndarray, i: int) -> list[int]:
    """Indices of the instances that directly occlude ``i``."""
    return [int(j) for j in np.flatnonzero(order[i] == -1)]


def ancestors(order: np.ndarray, i: int) -> list[int]:
    """All instances above ``i``: BFS along "is occluded by" edges with a visited set (cycles end)."""
    seen, frontier = {i}, [i]
    while frontier:
        nxt = []
        for q in frontier:
            for r in occluders(order, q):
                if r not in seen:
                    seen.add(r)
                    nxt.append(r)
        frontier = nxt
    seen.discard(i)
    return sorted(seen)


def neighbours(order: np.ndarray, i: int) -> list[int]:
    """Instances with any predicted order to ``i`` (the reference's NOG erasers)."""
    return [int(j) for j in np.flatnonzero(order[i] != 0)]


def patches(
    crops: list,
    windows: list,
    target: int,
    eraser_members: list[int],
    size: int,
    dilate: int = 0,
    resize: str = "nearest",
) -> tuple[np.ndarray, np.ndarray]:
    """Network patches ``[S, S]`` uint8 for one query: the target's modal mask and the union of
    ``eraser_members``' modal masks, both in the target's square window.

    ``resize``: 'nearest' (the reference's ordering inputs) or 'bilinear' (its completion inputs:
    bilinear, then > 0.5, the eraser resized as one union). ``dilate`` grows the eraser by that many
    image pixels (rescaled to the patch), bridging gaps between neighbouring annotations.
    """
    window = windows[target]
    if resize == "bilinear":
        modal = resample_linear(crops[target], window, size)
        eraser = resample_linear(
            Crop(union_within([crops[m] for m in eraser_members], window), *window[:2]), window, size
        )
    else:
        modal = resample(crops[target], window, size)
        eraser = np.zeros((size, size), dtype=bool)
        for m in eraser_members:
            eraser |= resample(crops[m], window, size)
    if dilate:
        width, height = window[2] - window[0], window[3] - window[1]
        eraser = dilate_square(eraser, max(1, round(dilate * size / width)), max(1, round(dilate * size / height)))
    return modal.astype(np.uint8), eraser.astype(np.uint8)


def soft_increment(prob: np.ndarray, modal: np.ndarray, eraser: np.ndarray, window: tuple) -> float:
    """Expected growth of the target behind the eraser, in image pixels: P(fg) summed over the
    eraser's pixels outside the target's visible mask (no threshold)."""
    side = window[2] - window[0]
    inside = eraser.astype(bool) & (modal == 0)
    return float(prob[inside].sum()) * (side / prob.shape[0]) ** 2


def increment(
    prob: np.ndarray, modal: np.ndarray, eraser: np.ndarray, window: tuple, threshold: float, mode: str = "code"
) -> float:
    """Growth of the target behind the eraser, in image pixels (reference protocol §4.2 step 2).

    'code' counts new foreground pixels inside the eraser only (the reference code); 'paper'
    counts every new foreground pixel. Patch pixels are rescaled by ``(side / S)^2``.
    """
    new = (prob > threshold) & (modal == 0)
    if mode == "code":
        new &= eraser.astype(bool)
    side = window[2] - window[0]
    return float(np.count_nonzero(new)) * (side / prob.shape[0]) ** 2
