"""Candidate pairs: the instances of one image whose visible masks touch."""

from __future__ import annotations

from amodalize.data.masks import Crop, near_pairs, touching


def touching_pairs(crops: list[Crop], reach: int = 1) -> list[tuple[int, int]]:
    """Index pairs ``(i, j)``, ``i < j``, whose masks touch under ``reach`` 3x3-cross dilations.

    Windows grown by ``reach`` pixels are compared first, so the exact test runs only on the pairs
    whose boxes meet, not on all N^2.
    """
    return [(i, j) for i, j in near_pairs(crops, reach) if touching(crops[i], crops[j], reach)]
