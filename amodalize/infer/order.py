"""The pairwise occlusion graph: a matrix ``order[N, N]`` of int8 where ``order[i, j] = +1``
means instance i occludes (is in front of) j, ``-1`` the reverse and 0 no order. It is
antisymmetric; cycles are allowed, so it is never reduced to one depth index.
"""

from __future__ import annotations

import numpy as np


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
