"""Mask codecs and geometry, always in cropped windows.

Glossary (used throughout amodalize):
    RLE     dict ``{"size": [height, width], "counts": str}``: COCO compressed run-length encoding
            of a full-image mask (pycocotools' format, counts decoded to ``str`` for JSON).
    bbox    COCO box ``[x, y, w, h]`` in image pixels (floats allowed).
    window  integer box ``(x0, y0, x1, y1)`` with exclusive ends; may extend past the image.
    Crop    a bool mask ``[h, w]`` placed at ``(x0, y0)``: the tight window of one instance. Every
            per-instance mask operation works on crops, never on a full-image array per instance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from pycocotools import mask as mask_utils
from shapely import make_valid
from shapely.geometry import LineString, Point, Polygon

from amodalize.errors import FormatError

Window = tuple[int, int, int, int]


@dataclass(frozen=True)
class Crop:
    """A bool mask ``mask[h, w]`` whose top-left pixel sits at image position ``(x0, y0)``."""

    mask: np.ndarray
    x0: int = 0
    y0: int = 0

    @property
    def window(self) -> Window:
        """The crop's window ``(x0, y0, x1, y1)``."""
        h, w = self.mask.shape
        return (self.x0, self.y0, self.x0 + w, self.y0 + h)

    @property
    def area(self) -> int:
        """Number of foreground pixels."""
        return int(np.count_nonzero(self.mask))

    def within(self, window: Window) -> np.ndarray:
        """This mask as a bool array of ``window``'s shape (zeros where the crop does not reach)."""
        return place(self.mask, self.window, window)


def place(src: np.ndarray, src_window: Window, dst_window: Window) -> np.ndarray:
    """``src`` (an array covering ``src_window``) as an array covering ``dst_window``, zero where
    the two windows do not overlap; extra trailing axes (colour) are kept."""
    out = np.zeros((dst_window[3] - dst_window[1], dst_window[2] - dst_window[0], *src.shape[2:]), src.dtype)
    x0, y0 = max(src_window[0], dst_window[0]), max(src_window[1], dst_window[1])
    x1, y1 = min(src_window[2], dst_window[2]), min(src_window[3], dst_window[3])
    if x1 > x0 and y1 > y0:
        out[y0 - dst_window[1] : y1 - dst_window[1], x0 - dst_window[0] : x1 - dst_window[0]] = src[
            y0 - src_window[1] : y1 - src_window[1], x0 - src_window[0] : x1 - src_window[0]
        ]
    return out


EMPTY = Crop(np.zeros((0, 0), dtype=bool))


def tight(mask: np.ndarray, x0: int = 0, y0: int = 0) -> Crop:
    """Shrink a bool mask placed at ``(x0, y0)`` to the tight crop of its foreground."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return EMPTY
    cols = np.flatnonzero(mask.any(axis=0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    return Crop(np.ascontiguousarray(mask[r0:r1, c0:c1]), x0 + int(c0), y0 + int(r0))


def to_rle(segmentation: object, height: int, width: int) -> dict:
    """Any COCO segmentation (polygons, uncompressed or compressed RLE) as a compressed RLE.

    This is the one place that tells the segmentation types apart; an empty polygon list is an
    empty mask; raises FormatError on malformed input (polygon with fewer than 3 points, RLE of
    another size, unknown type).
    """
    if isinstance(segmentation, list):
        polygons = segmentation
        if polygons and all(isinstance(v, (int, float)) for v in polygons):
            polygons = [polygons]  # COCOA stores one flat polygon
        if not polygons:  # a box-only annotation (CVAT, Roboflow): an empty mask
            return empty_rle(height, width)
        for poly in polygons:
            if not isinstance(poly, list) or not all(isinstance(v, (int, float)) for v in poly):
                raise FormatError("polygon is not a list of numbers")
            if len(poly) < 6 or len(poly) % 2:
                raise FormatError(f"polygon with {len(poly) // 2} points (needs at least 3)")
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    elif isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        size = list(segmentation["size"])
        if size != [height, width]:
            raise FormatError(f"RLE size {size} differs from the image size [{height}, {width}]")
        counts = segmentation["counts"]
        if isinstance(counts, list):
            if sum(counts) != height * width:
                raise FormatError("uncompressed RLE counts do not add up to height*width")
            rle = mask_utils.frPyObjects(segmentation, height, width)
        elif isinstance(counts, (str, bytes)):
            rle = {"size": size, "counts": counts.encode() if isinstance(counts, str) else counts}
            runs = compressed_counts(rle["counts"])
            if runs is None or (runs < 0).any() or runs.sum() != height * width:
                raise FormatError("compressed RLE counts are corrupt (they do not decode to height*width pixels)")
        else:
            raise FormatError("RLE counts must be a list or a string")
    else:
        raise FormatError("segmentation is neither polygons nor RLE")
    return _jsonable(rle)


def reaches_outside(segmentation: object, height: int, width: int, slack: float = 1.0) -> bool:
    """True when a polygon segmentation has a point more than ``slack`` pixels outside the image
    (rasterising keeps only the part inside; RLEs cannot reach outside)."""
    if not isinstance(segmentation, list) or not segmentation:
        return False
    polygons = [segmentation] if all(isinstance(v, (int, float)) for v in segmentation) else segmentation
    for poly in polygons:
        xy = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
        if xy.min() < -slack or xy[:, 0].max() > width + slack or xy[:, 1].max() > height + slack:
            return True
    return False


def empty_rle(height: int, width: int) -> dict:
    """The compressed RLE of an empty ``height`` x ``width`` mask."""
    return _jsonable(mask_utils.frPyObjects({"size": [height, width], "counts": [height * width]}, height, width))


def compressed_counts(text: bytes) -> np.ndarray | None:
    """The run lengths of a COCO compressed RLE string (pycocotools' rleFrString), or None when the
    string is not one: characters outside '0'..'o' or a number cut off at the end.

    Each run is a little-endian series of 5-bit groups in ``char - 48``; bit 0x20 says another group
    follows, bit 0x10 of the last group is the sign; from the fourth run on, each is stored as the
    difference to the run two places before.
    """
    codes = np.frombuffer(text, dtype=np.uint8).astype(np.int64) - 48
    if codes.size == 0:
        return np.zeros(0, np.int64)
    if codes.min() < 0 or codes.max() > 63 or codes[-1] & 0x20:
        return None
    last = ~(codes & 0x20).astype(bool)  # the last group of each number
    number = np.cumsum(np.concatenate([[0], last[:-1]]))  # which number each group belongs to
    first = np.flatnonzero(np.concatenate([[True], last[:-1]]))
    position = np.arange(codes.size) - first[number]
    value = np.bincount(number, weights=(codes & 0x1F) << (5 * position)).astype(np.int64)
    ends = np.flatnonzero(last)
    negative = (codes[ends] & 0x10).astype(bool)
    value[negative] -= np.left_shift(1, 5 * (position[ends][negative] + 1))
    runs = value.copy()
    runs[1::2] = np.cumsum(value[1::2])  # runs 3, 5, ... add the run two before
    runs[2::2] = np.cumsum(value[2::2])  # runs 4, 6, ... likewise
    return runs


def _jsonable(rle: dict) -> dict:
    counts = rle["counts"]
    return {
        "size": [int(v) for v in rle["size"]],
        "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
    }


def _c(rle: dict) -> dict:
    """The RLE as pycocotools' C layer wants it (bytes counts)."""
    counts = rle["counts"]
    return {"size": rle["size"], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def rle_area(rle: dict) -> int:
    """Foreground pixel count of an RLE, without decoding."""
    return int(mask_utils.area(_c(rle)))


def rle_bbox(rle: dict) -> list[float]:
    """Tight COCO box ``[x, y, w, h]`` of an RLE, without decoding (zeros when empty)."""
    return [float(v) for v in mask_utils.toBbox(_c(rle))]


def box_union(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """The smallest COCO box ``[x, y, w, h]`` holding boxes ``a`` and ``b``."""
    x0, y0 = min(a[0], b[0]), min(a[1], b[1])
    return [x0, y0, max(a[0] + a[2], b[0] + b[2]) - x0, max(a[1] + a[3], b[1] + b[3]) - y0]


def rle_merge(rles: Sequence[dict], intersect: bool = False) -> dict:
    """Union (or intersection) of same-size RLEs, without decoding."""
    return _jsonable(mask_utils.merge([_c(r) for r in rles], intersect=intersect))


def rle_intersection_area(a: dict, b: dict) -> int:
    """``|a ∩ b|`` in pixels, without decoding."""
    return rle_area(rle_merge([a, b], intersect=True))


def rle_iou(a: dict, b: dict) -> float:
    """Intersection over union of two same-size RLEs (1.0 when both are empty: they agree)."""
    inter = rle_intersection_area(a, b)
    union = rle_area(a) + rle_area(b) - inter
    return inter / union if union else 1.0


def rle_minus(a: dict, b: dict) -> dict:
    """``a \\ b`` as an RLE (decodes only the crop of ``a``)."""
    crop = decode_crop(a)
    if crop is EMPTY:
        return a
    h, w = a["size"]
    rest = crop.mask & ~decode_crop(b).within(crop.window)
    return encode_crop(Crop(rest, crop.x0, crop.y0), h, w)


def decode_crop(rle: dict) -> Crop:
    """Decode an RLE into the tight crop of its foreground (EMPTY when it has none), touching only
    the object's pixels: the work grows with the object, not with the image."""
    height = int(rle["size"][0])
    runs = compressed_counts(_c(rle)["counts"])
    ends = np.cumsum(runs)
    starts = ends[0::2][: len(runs) // 2]  # foreground runs begin where a background run ends
    lengths = runs[1::2]
    keep = lengths > 0
    starts, lengths = starts[keep], lengths[keep]
    if starts.size == 0:
        return EMPTY
    # every foreground pixel's index in the column-major image
    first = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    index = first + np.arange(first.size)
    cols, rows = np.divmod(index, height)
    x0, y0 = int(cols.min()), int(rows.min())
    mask = np.zeros((int(rows.max()) - y0 + 1, int(cols.max()) - x0 + 1), dtype=bool)
    mask[rows - y0, cols - x0] = True
    return Crop(mask, x0, y0)


def encode_crop(crop: Crop, height: int, width: int) -> dict:
    """A crop (clipped to the image) as a full-image compressed RLE, built from the crop's own
    column runs (pycocotools compresses them); no full-image array is made."""
    window = (max(crop.x0, 0), max(crop.y0, 0), min(crop.window[2], width), min(crop.window[3], height))
    if window[2] <= window[0] or window[3] <= window[1]:
        return empty_rle(height, width)
    mask = crop.within(window)
    h = mask.shape[0]
    # per column, the 0->1 and 1->0 changes along the padded column, as image indices
    padded = np.zeros((h + 2, mask.shape[1]), dtype=np.int8)
    padded[1:-1] = mask
    change = np.diff(padded, axis=0)  # [h + 1, w]: +1 where a run starts, -1 after it ends
    column, row = np.nonzero(change.T)  # column-major order, as the image's runs
    bounds = ((window[0] + column) * height + window[1] + row).reshape(-1, 2)  # [start, end) per run
    # a run that ends on a column's last row and one starting on the next column's first row are one
    apart = bounds[1:, 0] != bounds[:-1, 1]
    starts = bounds[np.concatenate([[True], apart])[: len(bounds)], 0]
    ends = bounds[np.concatenate([apart, [True]])[: len(bounds)], 1]
    edges = np.concatenate([[0], np.stack([starts, ends], axis=1).reshape(-1), [height * width]])
    counts = np.diff(edges).tolist()
    if len(counts) > 1 and counts[-1] == 0:  # the image ends in foreground: no empty last run
        counts.pop()
    return _jsonable(mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width))


def union_window(a: Window, b: Window) -> Window:
    """Smallest window containing both."""
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def intersect_window(a: Window, b: Window) -> Window | None:
    """Overlap of two windows, None when they do not overlap."""
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def grow(window: Window, k: int) -> Window:
    """The window enlarged by ``k`` pixels on every side."""
    return (window[0] - k, window[1] - k, window[2] + k, window[3] + k)


def dilate_cross(mask: np.ndarray) -> np.ndarray:
    """One dilation step with the 3x3 cross (4-neighbourhood), as the reference's touching test."""
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    return out


def dilate_square(mask: np.ndarray, k: int, k_rows: int | None = None) -> np.ndarray:
    """A bool mask grown by ``k`` pixels in every direction (chessboard distance), or by ``k``
    pixels sideways and ``k_rows`` up and down where given."""
    k_rows = k if k_rows is None else k_rows
    if max(k, k_rows) <= 0 or not mask.any():
        return mask
    kernel = np.ones((2 * max(k_rows, 0) + 1, 2 * max(k, 0) + 1), np.uint8)
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


def erode_square(mask: np.ndarray, k: int) -> np.ndarray:
    """A bool mask shrunk by ``k`` pixels from every side (chessboard distance; outside is background)."""
    if k <= 0 or not mask.any():
        return mask
    return ~dilate_square(~np.pad(mask, k), k)[k:-k, k:-k]


def near_pairs(crops: Sequence[Crop], reach: int) -> list[tuple[int, int]]:
    """Index pairs ``(i, j)``, ``i < j``, of non-empty crops whose windows, each grown by ``reach``
    pixels, meet: the candidates for any test of masks within ``reach`` of each other, found by
    comparing boxes only (all pairs at once)."""
    live = [k for k, c in enumerate(crops) if c is not EMPTY]
    if len(live) < 2:
        return []
    boxes = np.array([crops[k].window for k in live], dtype=np.int64) + np.array([-reach, -reach, reach, reach])
    x0, y0, x1, y1 = (boxes[:, None, c] for c in range(4))
    meet = (boxes[None, :, 0] <= x1) & (boxes[None, :, 2] >= x0) & (boxes[None, :, 1] <= y1) & (boxes[None, :, 3] >= y0)
    return [(live[a], live[b]) for a, b in zip(*np.nonzero(np.triu(meet, k=1)))]


def touching(a: Crop, b: Crop, reach: int = 1) -> bool:
    """True when ``a`` dilated ``reach`` times by the 3x3 cross meets ``b`` (reference protocol
    §1.3 uses reach 1; a larger reach bridges annotation gaps)."""
    if a is EMPTY or b is EMPTY:
        return False
    overlap = intersect_window(grow(a.window, reach), b.window)
    if overlap is None:
        return False
    dilated = a.within(grow(overlap, reach))
    for _ in range(reach):
        dilated = dilate_cross(dilated)
    return bool(np.any(dilated[reach:-reach, reach:-reach] & b.within(overlap)))


def convex_hull(crop: Crop) -> Crop:
    """Filled convex hull of a crop's foreground (pixel centres), in the same window."""
    if crop is EMPTY:
        return EMPTY
    contours, _ = cv2.findContours(crop.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    hull = cv2.convexHull(np.concatenate(contours))
    filled = np.zeros(crop.mask.shape, dtype=np.uint8)
    cv2.fillConvexPoly(filled, hull, 1)
    return Crop(filled.astype(bool) | crop.mask, crop.x0, crop.y0)


def union_within(crops: Sequence[Crop], window: Window, grow_by: int = 0) -> np.ndarray:
    """The union of several crops, each grown by ``grow_by`` pixels (chessboard), as a bool array
    of ``window``'s shape."""
    k = max(grow_by, 0)
    outer = grow(window, k)
    out = np.zeros((outer[3] - outer[1], outer[2] - outer[0]), dtype=bool)
    for crop in crops:
        out |= crop.within(outer)
    return dilate_square(out, k)[k : out.shape[0] - k, k : out.shape[1] - k]


def square_side(bbox: Sequence[float], enlarge: float = 3.0, ratio: float = 1.1) -> float:
    """Side of the square crop around a COCO box: ``max(sqrt(w*h*enlarge), ratio*w, ratio*h)``."""
    w, h = bbox[2], bbox[3]
    return max(float(np.sqrt(w * h * enlarge)), ratio * w, ratio * h)


def square_window(bbox: Sequence[float], enlarge: float = 3.0, ratio: float = 1.1) -> Window:
    """The reference's inference crop: a square of ``square_side`` centred on the box, int-truncated."""
    side = square_side(bbox, enlarge, ratio)
    x0, y0 = int(bbox[0] + bbox[2] / 2 - side / 2), int(bbox[1] + bbox[3] / 2 - side / 2)
    return (x0, y0, x0 + int(side), y0 + int(side))


def completion_window(
    bbox: Sequence[float], enlarge: float = 3.0, ratio: float = 1.1, max_aspect: float = 0.0
) -> Window:
    """The window an object is completed on: ``square_window``, narrowed about the box's centre
    along its short axis so that a box longer than ``max_aspect`` times its width fills the
    network's square input as if it were only ``max_aspect`` times as long (0: always square)."""
    window = square_window(bbox, enlarge, ratio)
    w, h = bbox[2], bbox[3]
    if max_aspect <= 0 or min(w, h) <= 0 or max(w, h) <= max_aspect * min(w, h):
        return window
    short = max(int((window[2] - window[0]) * max_aspect * min(w, h) / max(w, h)), 1)
    if w >= h:
        y0 = int(bbox[1] + h / 2 - short / 2)
        return (window[0], y0, window[2], y0 + short)
    x0 = int(bbox[0] + w / 2 - short / 2)
    return (x0, window[1], x0 + short, window[3])


def resample(crop: Crop, window: Window, out: int) -> np.ndarray:
    """A window of a crop (square or not) nearest-resized to ``[out, out]`` bool (cv2
    INTER_NEAREST rule).

    Zero outside the crop; the window is never materialised at full size.
    """
    rows = window[1] + np.floor(np.arange(out) * ((window[3] - window[1]) / out)).astype(np.intp) - crop.y0
    cols = window[0] + np.floor(np.arange(out) * ((window[2] - window[0]) / out)).astype(np.intp) - crop.x0
    h, w = crop.mask.shape
    # the indices never decrease, so those inside the crop are one run per axis: two 1-D takes into
    # a slice, 3x faster at 256 px than 2-D fancy indexing (where a third of convert's host time went)
    r0, r1 = np.searchsorted(rows, 0), np.searchsorted(rows, h)
    c0, c1 = np.searchsorted(cols, 0), np.searchsorted(cols, w)
    patch = np.zeros((out, out), dtype=bool)
    patch[r0:r1, c0:c1] = crop.mask.take(rows[r0:r1], axis=0).take(cols[c0:c1], axis=1)
    return patch


def resample_linear(crop: Crop, window: Window, out: int) -> np.ndarray:
    """A window of a crop resized to ``[out, out]`` bool by bilinear interpolation of 0/1
    values and ``> 0.5`` (the reference's completion inputs; materialises the window)."""
    side = window[2] - window[0]
    return (
        cv2.resize(crop.within(window).astype(np.float32), (out, out), interpolation=cv2.INTER_LINEAR) > 0.5
        if side
        else np.zeros((out, out), bool)
    )


def resample_cover(mask: np.ndarray, out: int) -> np.ndarray:
    """A square bool mask resized to ``[out, out]``, True wherever the source has any True pixel
    (never loses a thin part, unlike nearest resizing)."""
    return cv2.resize(mask.astype(np.float32), (out, out), interpolation=cv2.INTER_AREA) > 0


def centroid_y(crop: Crop) -> float:
    """Mean row of the foreground pixels, in image pixels."""
    rows = np.nonzero(crop.mask)[0]
    return float(rows.mean()) + crop.y0


def mask_to_polygons(mask: np.ndarray, x0: int = 0, y0: int = 0) -> list[list[float]]:
    """Every outer part of a bool mask (whose top-left pixel is image pixel ``(x0, y0)``) as a COCO
    polygon ``[x1, y1, x2, y2, ...]`` along the pixels' outer edges, so that rasterising it gives
    the mask back (holes, which COCO polygons cannot hold, are filled); the largest part first, as
    readers that take one polygon per object take the first."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for contour in contours:
        # the contour runs through the boundary pixels' centres (x + 0.5 in COCO coordinates); half
        # a pixel outwards, with square corners, lies on their outer edges
        centres = contour.reshape(-1, 2) + np.array([x0 + 0.5, y0 + 0.5])
        shape = (
            Polygon(centres) if len(centres) >= 3 else LineString(centres) if len(centres) == 2 else Point(centres[0])
        )
        outline = make_valid(shape).buffer(0.5, join_style="mitre", cap_style="square", mitre_limit=2.0)
        parts = outline.geoms if hasattr(outline, "geoms") else [outline]
        for part in parts:
            if part.geom_type == "Polygon" and not part.is_empty:
                polygons.append((part.area, np.round(np.asarray(part.exterior.coords)[:-1], 2).reshape(-1).tolist()))
    return [polygon for _, polygon in sorted(polygons, key=lambda p: -p[0])]


def rle_to_polygons(rle: dict) -> list[list[float]]:
    """A compressed RLE as COCO polygons (``mask_to_polygons``) inside its image; [] for an empty mask."""
    crop = decode_crop(rle)
    if crop is EMPTY:
        return []
    height, width = rle["size"]
    # a mitred corner reaches past the pixel's edge on diagonal outlines: keep it in the image
    return [
        np.clip(np.reshape(p, (-1, 2)), 0, [width, height]).reshape(-1).tolist()
        for p in mask_to_polygons(crop.mask, crop.x0, crop.y0)
    ]
