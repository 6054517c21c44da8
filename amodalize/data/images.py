"""Image files: checked lookup, reading, and square crops resized for the networks.

Pixels are ``uint8`` arrays in OpenCV's BGR order ``[H, W, 3]`` unless a function says otherwise.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np

from amodalize.data.masks import Window
from amodalize.data.records import ImageRecord
from amodalize.errors import InputError


def check_images(images: list[ImageRecord], images_dir: Path) -> None:
    """Fail with one line when any image of ``images`` has no file in ``images_dir``."""
    missing = [im.file_name for im in images if not im.file_name or not (images_dir / im.file_name).is_file()]
    if missing:
        raise InputError(images_dir, f"{len(missing)} image file(s) missing, e.g. {missing[0]!r}")


def read_image(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """The BGR pixels of ``path``; with ``size`` = (height, width), a file of another size is an error."""
    pixels = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if pixels is None:
        raise InputError(path, "cannot be read as an image")
    if size is not None and pixels.shape[:2] != tuple(size):
        h, w = pixels.shape[:2]
        raise InputError(path, f"is {w}x{h} pixels, the annotations say {size[1]}x{size[0]}")
    return pixels


def read_rgb(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """``read_image`` in RGB order, contiguous ``[H, W, 3]`` uint8."""
    return np.ascontiguousarray(read_image(path, size)[..., ::-1])


class ImageCache:
    """Recently read images of one folder, at most ``capacity`` kept (one cache per process)."""

    def __init__(self, images_dir: Path, capacity: int = 64) -> None:
        self.images_dir, self.capacity = Path(images_dir), capacity
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()

    def __call__(self, file_name: str, size: tuple[int, int] | None = None) -> np.ndarray:
        """The BGR pixels of ``images_dir / file_name`` (checked to be ``size`` = (height, width) if given)."""
        if file_name in self._items:
            self._items.move_to_end(file_name)
            return self._items[file_name]
        pixels = read_image(self.images_dir / file_name, size)
        self._items[file_name] = pixels
        if len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return pixels


def crop_image(pixels: np.ndarray, window: Window, out: int) -> np.ndarray:
    """A square ``window`` of an image resized to ``[out, out, C]`` (zero outside the image).

    Only the part inside the image is resized (area when shrinking, cubic when enlarging), so the
    window is never materialised at full size when it is much larger than ``out``.
    """
    h, w = pixels.shape[:2]
    x0, y0, x1, y1 = window
    side = x1 - x0
    scale = out / side
    patch = np.zeros((out, out, *pixels.shape[2:]), dtype=pixels.dtype)
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if ix1 <= ix0 or iy1 <= iy0:
        return patch
    # destination pixels covered by the part of the window inside the image
    dx0, dy0 = round((ix0 - x0) * scale), round((iy0 - y0) * scale)
    dx1, dy1 = max(round((ix1 - x0) * scale), dx0 + 1), max(round((iy1 - y0) * scale), dy0 + 1)
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    patch[dy0:dy1, dx0:dx1] = cv2.resize(pixels[iy0:iy1, ix0:ix1], (dx1 - dx0, dy1 - dy0), interpolation=interpolation)
    return patch


def uncrop_image(patch: np.ndarray, window: Window, height: int, width: int) -> tuple[np.ndarray, Window]:
    """Inverse of ``crop_image``: the patch resized to its window, clipped to the image, with the
    clipped window ``(x0, y0, x1, y1)`` it covers; an empty array when the window misses the image."""
    x0, y0, x1, y1 = window
    side = x1 - x0
    interpolation = cv2.INTER_AREA if side < patch.shape[0] else cv2.INTER_CUBIC
    full = cv2.resize(patch, (side, side), interpolation=interpolation)
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if cx1 <= cx0 or cy1 <= cy0:
        return full[:0, :0], (cx0, cy0, cx0, cy0)
    return full[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0], (cx0, cy0, cx1, cy1)


def write_image_atomic(path: Path, pixels: np.ndarray) -> None:
    """Write BGR(A) pixels to ``path`` (format from its suffix) through a temporary file and a rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        ok = cv2.imwrite(str(tmp), pixels)
    except cv2.error:
        ok = False
    if not ok:
        tmp.unlink(missing_ok=True)
        raise InputError(path, "cannot be written as an image (is the suffix .png or .jpg, the folder there?)")
    os.replace(tmp, path)
