"""Amodal completion with PCNet-M: which instances erase a target, and pasting the result back
(reference protocol §4.4)."""

from __future__ import annotations

import cv2
import numpy as np

from amodalize.data.masks import EMPTY, Crop, Window, tight
from amodalize.infer.order import ancestors, neighbours


def eraser_members(order: np.ndarray, i: int, mode: str = "og") -> list[int]:
    """Instances whose union erases target ``i``: all ancestors ('og', order-grounded) or all
    instances with any predicted order to it ('nog')."""
    if mode == "og":
        return ancestors(order, i)
    if mode == "nog":
        return neighbours(order, i)
    raise ValueError(f"unknown amodal mode {mode!r}; choose 'og' or 'nog'")


def paste(prob: np.ndarray, window: Window, threshold: float, height: int, width: int, resize: str = "binary") -> Crop:
    """The ``[S, S]`` prediction on its window (square or not), clipped to the image, as a tight crop:
    thresholded, then resized (bilinear, > 0.5; ``resize='binary'``, the reference), or resized
    bilinearly, then thresholded (``'probability'``: outlines as smooth at any window size as P(fg))."""
    x0, y0, x1, y1 = window
    size = (x1 - x0, y1 - y0)
    if resize == "probability":
        mask = cv2.resize(prob.astype(np.float32), size, interpolation=cv2.INTER_LINEAR) > threshold
    elif resize == "binary":
        mask = cv2.resize((prob > threshold).astype(np.float32), size, interpolation=cv2.INTER_LINEAR) > 0.5
    else:
        raise ValueError(f"unknown paste resize {resize!r}; choose 'binary' or 'probability'")
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if cx1 <= cx0 or cy1 <= cy0:
        return EMPTY
    return tight(mask[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0], cx0, cy0)
