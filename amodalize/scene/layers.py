"""Scene de-occlusion: each object completed (mask and content) as an RGBA layer, plus the
background with every object removed (paper §3.3; reference protocol §4.5).

Per image: the amodal masks and the order graph (from PCNet-M, or read from an amodal file), the
invisible part of each object painted by PCNet-C in a square crop around it, the background
painted where any object was, and ``layers.json`` with the paint order. All network work of a
chunk of images goes through one ``Painter`` in batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from amodalize.data.images import crop_image, uncrop_image
from amodalize.data.masks import EMPTY, Crop, Window, place, resample, resample_cover, square_window, union_within
from amodalize.data.records import ImageRecord, Instance

CYCLE_RULE = (
    "where the order graph has a cycle, the object that occludes the fewest of the objects not yet "
    "painted is painted next (ties: the lower annotation id)"
)


@dataclass(frozen=True)
class SceneOptions:
    """How layers are painted.

    hole_dilate: how far the painted region reaches into the visible part around each hidden
        part, in pixels of the object's crop resized to 256 px, so that the mixed-colour pixels
        along an occluder's edge are repainted too (reference: 5; 0 keeps every visible pixel).
    background_dilate: the same for the background's hole around every object, in pixels of the
        image resized to a 384-px side (reference: 4).
    background: who paints the background: 'pcnet-c' (the paper) or 'opencv' (``cv2.inpaint``,
        Telea, radius 5, at full resolution).
    background_scale: PCNet-C paints the background on the whole image resized to this many
        times its input size (reference: 1.5, i.e. 384 px for a 256-px model; 1.0 measured better
        for the cpu-small model on synth scenes, see scripts/bench_scene.py).
    enlarge, side_ratio: object crop side = max(sqrt(w*h*enlarge), side_ratio*w, side_ratio*h)
        around the amodal box (PCNet-C's training crops).
    """

    hole_dilate: int = 5
    background_dilate: int = 4
    background: str = "pcnet-c"
    background_scale: float = 1.0
    enlarge: float = 3.0
    side_ratio: float = 1.1

    def __post_init__(self) -> None:
        if self.background not in ("pcnet-c", "opencv"):
            raise ValueError(f"unknown background painter {self.background!r}; choose 'pcnet-c' or 'opencv'")


@dataclass
class SceneObject:
    """One object of a scene: its annotation, visible and amodal crops, and direct occluders (ids)."""

    instance: Instance
    visible: Crop
    amodal: Crop
    occluded_by: list[int]


@dataclass
class Layer:
    """An object's painted layer: ``rgba[h, w, 4]`` uint8 (RGB order, alpha = amodal mask) whose
    top-left pixel sits at ``(x0, y0)``, and how many of its pixels were painted."""

    rgba: np.ndarray
    x0: int
    y0: int
    painted: int = 0

    @property
    def window(self) -> Window:
        h, w = self.rgba.shape[:2]
        return (self.x0, self.y0, self.x0 + w, self.y0 + h)


@dataclass
class Scene:
    """A de-occluded image: RGB ``background[H, W, 3]``, one layer per object id, the paint order
    (ids, back to front) and whether the order graph has a cycle."""

    image: ImageRecord
    objects: list[SceneObject]
    background: np.ndarray
    layers: dict[int, Layer] = field(default_factory=dict)
    paint_order: list[int] = field(default_factory=list)
    cyclic: bool = False


def paint_order(ids: list[int], occluded_by: dict[int, list[int]]) -> tuple[list[int], bool]:
    """Ids back to front so that every object comes after all it occludes (Kahn's algorithm), and
    whether a cycle had to be broken (then by ``CYCLE_RULE``)."""
    occludes = {i: {j for j in ids if i in occluded_by.get(j, ())} for i in ids}
    remaining = set(ids)
    order, cyclic = [], False
    while remaining:
        ready = sorted(i for i in remaining if not occludes[i] & remaining)
        if not ready:
            cyclic = True
            ready = [min(remaining, key=lambda i: (len(occludes[i] & remaining), i))]
        for i in ready:
            order.append(i)
            remaining.discard(i)
    return order, cyclic


def _dilate(mask: np.ndarray, k: int) -> np.ndarray:
    if k <= 0 or not mask.any():
        return mask
    return cv2.dilate(mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1,) * 2)) > 0


@dataclass
class _Query:
    """One object's PCNet-C input in its square window; ``region`` = the pixels to paint, in the window."""

    key: int
    window: Window
    region: np.ndarray


def object_queries(
    rgb: np.ndarray, objects: list[SceneObject], size: int, opts: SceneOptions
) -> tuple[list[_Query], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """PCNet-C queries for the objects with a hidden part: the queries and their stacked
    RGB ``[Q, S, S, 3]``, hole ``[Q, S, S]``, visible ``[Q, S, S]`` and category ``[Q]``."""
    queries, rgbs, holes, visibles, categories = [], [], [], [], []
    for obj in objects:
        if obj.amodal is EMPTY or not np.any(obj.amodal.mask & ~obj.visible.within(obj.amodal.window)):
            continue
        x0, y0, x1, y1 = obj.amodal.window
        window = square_window([x0, y0, x1 - x0, y1 - y0], opts.enlarge, opts.side_ratio)
        amodal, visible = obj.amodal.within(window), obj.visible.within(window)
        k = round(opts.hole_dilate * (window[2] - window[0]) / 256)
        region = _dilate(amodal & ~visible, k) & amodal
        queries.append(_Query(obj.instance.id, window, region))
        rgbs.append(crop_image(rgb, window, size))
        hole = resample_cover(region, size)  # every pixel to paste must be painted
        holes.append(hole)
        visibles.append(resample(Crop(visible, window[0], window[1]), window, size) & ~hole)
        categories.append(obj.instance.category_id)
    if not queries:
        empty = np.zeros((0, size, size), np.uint8)
        return [], np.zeros((0, size, size, 3), np.uint8), empty, empty, np.zeros(0, np.float32)
    return (
        queries,
        np.stack(rgbs),
        np.stack(holes).astype(np.uint8),
        np.stack(visibles).astype(np.uint8),
        np.array(categories, np.float32),
    )


def background_hole(rgb: np.ndarray, objects: list[SceneObject], opts: SceneOptions) -> np.ndarray:
    """The background pixels to repaint ``[H, W]``: every object's visible mask, grown by
    ``background_dilate`` (pixels at a 384-px image side)."""
    h, w = rgb.shape[:2]
    hole = union_within([obj.visible for obj in objects], (0, 0, w, h))
    return _dilate(hole, round(opts.background_dilate * max(h, w) / 384))


def background_query(
    rgb: np.ndarray, objects: list[SceneObject], size: int, opts: SceneOptions
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The background's PCNet-C input: the whole image padded to a square and resized to ``size``
    (RGB ``[S, S, 3]``, hole ``[S, S]``, visible background ``[S, S]``) and the full-size hole ``[H, W]``."""
    h, w = rgb.shape[:2]
    side = max(h, w)
    window = (0, 0, side, side)
    hole = background_hole(rgb, objects, opts)
    patch_hole = resample_cover(place(hole, (0, 0, w, h), window), size)
    return crop_image(rgb, window, size), patch_hole.astype(np.uint8), (~patch_hole).astype(np.uint8), hole


def build_layers(rgb: np.ndarray, scene: Scene, queries: list[_Query], painted: np.ndarray) -> None:
    """Fill ``scene.layers``: each object's image pixels under its amodal mask, its painted
    region replaced by ``painted`` (PCNet-C composites ``[Q, S, S, 3]``, one per query)."""
    h, w = rgb.shape[:2]
    by_key = {q.key: (q, painted[k]) for k, q in enumerate(queries)}
    for obj in scene.objects:
        if obj.amodal is EMPTY:
            continue
        window = obj.amodal.window
        pixels = place(rgb, (0, 0, w, h), window)
        count = 0
        if obj.instance.id in by_key:
            q, patch = by_key[obj.instance.id]
            full, full_window = uncrop_image(patch, q.window, h, w)
            region = place(q.region, q.window, window) & obj.amodal.mask
            pixels[region] = place(full, full_window, window)[region]
            count = int(region.sum())
        alpha = obj.amodal.mask.astype(np.uint8) * 255
        scene.layers[obj.instance.id] = Layer(np.dstack([pixels, alpha]), window[0], window[1], count)


def fill_background(rgb: np.ndarray, hole: np.ndarray, painted: np.ndarray) -> np.ndarray:
    """The image with the ``hole [H, W]`` pixels taken from ``painted`` (the square background
    composite ``[S, S, 3]`` of ``background_query``)."""
    h, w = rgb.shape[:2]
    side = max(h, w)
    full, full_window = uncrop_image(painted, (0, 0, side, side), h, w)
    out = rgb.copy()
    out[hole] = place(full, full_window, (0, 0, w, h))[hole]
    return out
