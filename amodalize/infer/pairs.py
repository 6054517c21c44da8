"""Candidate pairs: the instances of one image whose visible masks touch."""

from __future__ import annotations

import numpy as np

from amodalize.data.masks import EMPTY, Crop, touching


def touching_pairs(crops: list[Crop], reach: int = 1) -> list[tuple[int, int]]:
    """Index pairs ``(i, j)``, ``i < j``, whose masks touch under ``reach`` 3x3-cross dilations.

    Windows grown by ``reach`` pixels are compared first, so the exact test runs only on the pairs
    whose boxes meet, not on all N^2.
    """
    live = [k for k, c in enumerate(crops) if c is not EMPTY]
    if len(live) < 2:
        return []
    boxes = np.array([crops[k].window for k in live], dtype=np.int64) + np.array([-reach, -reach, reach, reach])
    x0, y0, x1, y1 = (boxes[:, None, c] for c in range(4))
    meet = (boxes[None, :, 0] <= x1) & (boxes[None, :, 2] >= x0) & (boxes[None, :, 1] <= y1) & (boxes[None, :, 3] >= y0)
    pairs = []
    for a, b in zip(*np.nonzero(np.triu(meet, k=1))):
        i, j = live[a], live[b]
        if touching(crops[i], crops[j], reach):
            pairs.append((i, j))
    return pairs
