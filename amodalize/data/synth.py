"""Procedural occlusion scenes with exact amodal ground truth, for demos, tests and training.

Objects (ellipses, convex and concave polygons, rounded boxes, stars, thin bars, rings) are
stacked back to front; an object is dropped when too little of it would stay visible. Each image
is drawn from its own generator seeded by ``(seed, image index)``, so a scene never depends on
how many others are made or in which process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from amodalize.data.masks import Crop, decode_crop, dilate_square, encode_crop, place, rle_area, rle_bbox
from amodalize.data.records import Dataset, ImageRecord, ImageResult, Instance
from amodalize.data.writer import augment, write_json_atomic

SHAPES = ("ellipse", "convex", "concave", "rounded_box", "star", "bar", "ring")
# COCO's 80 category ids (1..90 with gaps).
COCO_IDS = (
    *range(1, 12),
    *range(13, 26),
    27,
    28,
    *range(31, 45),
    *range(46, 66),
    67,
    70,
    *range(72, 83),
    *range(84, 91),
)
# The category ids each object draws from: one category, COCO's ids, or 0..79 as tools that count
# from 0 export them (Label Studio, Roboflow).
CATEGORY_SETS = {"one": (1,), "coco": COCO_IDS, "zero-based": tuple(range(80))}


def categories_of(ids: Sequence[int]) -> list[dict]:
    """A COCO ``categories`` list for ``ids``."""
    if tuple(ids) == (1,):
        return [{"id": 1, "name": "object", "supercategory": "object"}]
    return [{"id": i, "name": f"class {i}", "supercategory": "object"} for i in ids]


@dataclass(frozen=True)
class SynthOptions:
    """How scenes are drawn.

    width, height: image size in pixels.
    min_objects, max_objects: objects attempted per image (some are dropped as hidden).
    min_visible: an object stays only if at least this fraction of it is visible.
    min_pixels: ... and at least this many of its pixels are visible (after the gap).
    gap: pixels eroded from every visible mask, as hand annotations leave gaps between neighbours.
    polygon: every full mask becomes a polygon through its outline's corners, none of them farther
        than this many pixels from the outline (0: the drawn shapes as they are), as annotators
        click polygons; what is visible is then cut by the occluders' polygons, as in COCO-style
        amodal annotations.
    render: also paint RGB images (textured objects on textured backgrounds).
    kinds: the procedural shapes drawn, from SHAPES (e.g. only the convex ones, like the boxes,
        cans and bowls of tabletop scenes).
    categories: the ids objects draw their category from (CATEGORY_SETS: 'one', 'coco' or
        'zero-based'); drawn from a generator of their own, so the scenes are the same for each.
    outlines: the shares of occluded objects outlined as COCO annotators outline each object alone
        (``draw_outlines``): around the occluders that lie inside it (nested masks), through every
        occluder (its whole amodal mask), or 1-3 px into what lies in front (a boundary sliver); the
        rest get their visible mask, as in COCOA. Drawn from a generator of their own, so the
        scenes are the same for every share (0, 0, 0: visible masks partition the image).
    """

    width: int = 256
    height: int = 256
    min_objects: int = 3
    max_objects: int = 7
    min_visible: float = 0.3
    min_pixels: int = 40
    gap: int = 0
    polygon: float = 0.0
    render: bool = False
    kinds: tuple[str, ...] = SHAPES
    categories: str = "one"
    outlines: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        if min(self.outlines) < 0 or sum(self.outlines) > 1:
            raise ValueError(f"outline shares {self.outlines} must be at least 0 and add up to at most 1")
        if self.categories not in CATEGORY_SETS:
            raise ValueError(f"unknown category set {self.categories!r}; choose from {', '.join(CATEGORY_SETS)}")
        unknown = [k for k in self.kinds if k not in SHAPES]
        if unknown or not self.kinds:
            what = f"unknown shape kinds {unknown}" if unknown else "no shape kinds given"
            raise ValueError(f"{what}; choose from {', '.join(SHAPES)}")


def _shape(rng: np.random.Generator, kind: str, h: int, w: int) -> np.ndarray:
    """One object's full (amodal) mask, clipped to the image."""
    canvas = np.zeros((h, w), dtype=np.uint8)
    side = min(h, w)
    r = rng.uniform(0.1, 0.28) * side
    cx, cy = rng.uniform(0.05, 0.95) * w, rng.uniform(0.05, 0.95) * h
    angle = rng.uniform(0, 2 * np.pi)

    def poly(radii: np.ndarray, angles: np.ndarray) -> np.ndarray:
        pts = np.stack([cx + radii * np.cos(angles + angle), cy + radii * np.sin(angles + angle)], axis=1)
        return np.round(pts).astype(np.int32)

    if kind == "ellipse":
        axes = (int(r), int(r * rng.uniform(0.4, 1.0)))
        cv2.ellipse(canvas, (int(cx), int(cy)), axes, np.degrees(angle), 0, 360, 1, -1)
    elif kind in ("convex", "concave"):
        k = int(rng.integers(5, 10))
        angles = np.sort(rng.uniform(0, 2 * np.pi, k))
        radii = r * rng.uniform(0.85, 1.0, k) if kind == "convex" else r * rng.uniform(0.35, 1.0, k)
        pts = poly(radii, angles)
        cv2.fillPoly(canvas, [cv2.convexHull(pts) if kind == "convex" else pts], 1)
    elif kind == "rounded_box":
        corner = max(2, int(r * 0.25))
        box = (
            (cx, cy),
            (2 * r * rng.uniform(0.6, 1.0) - 2 * corner, 2 * r * rng.uniform(0.4, 0.9) - 2 * corner),
            np.degrees(angle),
        )
        cv2.fillPoly(canvas, [np.round(cv2.boxPoints(box)).astype(np.int32)], 1)
        canvas = cv2.dilate(canvas, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * corner + 1,) * 2))
    elif kind == "star":
        k = int(rng.integers(5, 8))
        angles = np.linspace(0, 2 * np.pi, 2 * k, endpoint=False)
        radii = np.where(np.arange(2 * k) % 2 == 0, r, r * rng.uniform(0.35, 0.55))
        cv2.fillPoly(canvas, [poly(radii, angles)], 1)
    elif kind == "bar":
        box = ((cx, cy), (2.6 * r, max(4.0, r * rng.uniform(0.15, 0.3))), np.degrees(angle))
        cv2.fillPoly(canvas, [np.round(cv2.boxPoints(box)).astype(np.int32)], 1)
    else:  # ring: a shape with a hole
        cv2.circle(canvas, (int(cx), int(cy)), int(r), 1, -1)
        cv2.circle(canvas, (int(cx), int(cy)), int(r * rng.uniform(0.35, 0.6)), 0, -1)
    return canvas.astype(bool)


def polygonize(mask: np.ndarray, tolerance: float) -> np.ndarray:
    """``mask`` (bool ``[H, W]``) redrawn as polygons with corners at most ``tolerance`` pixels from
    its outlines (Douglas-Peucker); holes stay holes."""
    contours, hierarchy = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    out = np.zeros(mask.shape, dtype=np.uint8)
    if not contours:
        return out.astype(bool)
    polygons = [cv2.approxPolyDP(c, tolerance, closed=True) for c in contours]
    outer = [p for p, h in zip(polygons, hierarchy[0]) if h[3] < 0]
    holes = [p for p, h in zip(polygons, hierarchy[0]) if h[3] >= 0]
    cv2.fillPoly(out, outer, 1)
    if holes:
        cv2.fillPoly(out, holes, 0)
    return out.astype(bool)


def place_shape(rng: np.random.Generator, shapes: Sequence[np.ndarray], h: int, w: int, near: tuple | None) -> tuple:
    """One of ``shapes`` (tight bool masks at their natural scale) scaled 0.7-1.3x, maybe mirrored,
    and placed on an ``[h, w]`` canvas (cut by its border where it reaches over): near the centre
    ``near`` = (cx, cy, radius) of an object placed before, so that objects touch and overlap, or
    anywhere when None. Returns the full mask and its (cx, cy, radius)."""
    shape = shapes[int(rng.integers(len(shapes)))]
    scale = rng.uniform(0.7, 1.3) * min(1.0, 0.8 * min(h, w) / max(shape.shape))
    sh, sw = max(1, round(shape.shape[0] * scale)), max(1, round(shape.shape[1] * scale))
    mask = cv2.resize(shape.astype(np.uint8), (sw, sh), interpolation=cv2.INTER_NEAREST).astype(bool)
    if rng.random() < 0.5:
        mask = mask[:, ::-1]
    radius = 0.5 * np.hypot(sh, sw)
    if near is None:
        cx, cy = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h
    else:
        angle, reach = rng.uniform(0, 2 * np.pi), rng.uniform(0.15, 0.8) * (near[2] + radius)
        cx, cy = near[0] + reach * np.cos(angle), near[1] + reach * np.sin(angle)
    x0, y0 = int(round(cx - sw / 2)), int(round(cy - sh / 2))
    canvas = place(mask, (x0, y0, x0 + sw, y0 + sh), (0, 0, w, h))
    return canvas, (cx, cy, radius)


def layer(
    candidates: list[np.ndarray], min_visible: float, min_pixels: int, erode: int = 0, cut: int = 0
) -> tuple[list[np.ndarray], list[np.ndarray], list[list[int]]]:
    """Stack full masks (listed back to front): amodal masks, annotated visible masks and direct
    occluders (indices) of the objects kept, back to front.

    An annotated visible mask is the visible part eroded by ``erode`` pixels (not from the image
    border) and kept ``cut`` pixels away from what lies in front (annotation gaps). Objects are
    considered front to back so that dropping a mostly hidden one never changes what is visible of
    the objects in front of it.
    """
    kept: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # front to back: amodal, visible, annotated
    covered = np.zeros(candidates[0].shape, dtype=bool) if candidates else None
    kernel = np.ones((3, 3), np.uint8)
    for amodal in reversed(candidates):
        area = np.count_nonzero(amodal)
        visible = amodal & ~covered
        shown = cv2.erode(visible.astype(np.uint8), kernel, iterations=erode).astype(bool) if erode else visible
        if cut:
            shown &= ~dilate_square(covered, cut)
        if area == 0 or np.count_nonzero(visible) < min_visible * area or np.count_nonzero(shown) < min_pixels:
            continue
        kept.append((amodal, visible, shown))
        covered |= amodal
    kept.reverse()
    occluders = [[j for j in range(i + 1, len(kept)) if np.any(kept[j][1] & kept[i][0])] for i in range(len(kept))]
    return [k[0] for k in kept], [k[2] for k in kept], occluders


def make_scene(
    rng: np.random.Generator, opts: SynthOptions, shapes: Sequence[np.ndarray] | None = None
) -> tuple[list[np.ndarray], list[np.ndarray], list[list[int]]]:
    """Amodal masks, visible masks and direct occluders (indices), listed back to front: procedural
    shapes, or ``shapes`` (tight bool masks) placed in clusters."""
    h, w = opts.height, opts.width
    n = int(rng.integers(opts.min_objects, opts.max_objects + 1))
    if shapes is None:
        candidates = [_shape(rng, opts.kinds[int(rng.integers(len(opts.kinds)))], h, w) for _ in range(n)]
        if opts.polygon:
            candidates = [polygonize(c, opts.polygon) for c in candidates]
    else:
        candidates = place_cluster(rng, shapes, n, h, w)
    return layer(candidates, opts.min_visible, opts.min_pixels, erode=opts.gap)


def draw_outlines(
    rng: np.random.Generator,
    amodals: list[np.ndarray],
    visibles: list[np.ndarray],
    shares: tuple[float, float, float],
) -> list[np.ndarray]:
    """The masks an annotator who outlines each object alone draws for a scene (``[H, W]`` bool,
    listed back to front): each object's visible mask, or with the probabilities ``shares`` the
    mask outlined around the objects in front that lie (90% or more) inside it, through everything
    in front, or 1-3 px into what lies in front."""
    drawn = []
    for k, (amodal, visible) in enumerate(zip(amodals, visibles)):
        style = int(rng.choice(4, p=[1 - sum(shares), *shares]))
        front = [visibles[j] for j in range(k + 1, len(visibles))]
        if style == 1:
            inside = [v & amodal for v in front if np.count_nonzero(v & amodal) >= 0.9 * max(np.count_nonzero(v), 1)]
            visible = np.logical_or.reduce([visible, *inside])
        elif style == 2:
            visible = np.logical_or.reduce([visible, *(v & amodal for v in front)])
        elif style == 3 and front:
            reach = dilate_square(visible, int(rng.integers(1, 4)))
            visible = visible | (reach & np.logical_or.reduce(front))
        drawn.append(visible)
    return drawn


def place_cluster(rng: np.random.Generator, shapes: Sequence[np.ndarray], n: int, h: int, w: int) -> list[np.ndarray]:
    """``n`` of ``shapes`` placed on an ``[h, w]`` canvas, each near one placed before it (back to front)."""
    candidates, placed = [], []
    for _ in range(n):
        near = placed[int(rng.integers(len(placed)))] if placed else None
        mask, where = place_shape(rng, shapes, h, w, near)
        candidates.append(mask)
        placed.append(where)
    return candidates


def render_layers(
    rng: np.random.Generator, amodals: list[np.ndarray], size: tuple[int, int]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The textures of a scene as float BGR ``[H, W, 3]``: the background and one full texture per
    object (its true appearance, hidden parts included), drawn in that order."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)

    def texture() -> np.ndarray:
        base = rng.uniform(30, 225, 3)
        theta, freq = rng.uniform(0, np.pi), rng.uniform(0.05, 0.4)
        stripes = np.sin(freq * (xx * np.cos(theta) + yy * np.sin(theta)))[..., None]
        noise = rng.normal(0, 8, (h, w, 1))
        return base + rng.uniform(10, 40) * stripes + noise

    background = texture()
    return background, [texture() for _ in amodals]


def render(rng: np.random.Generator, amodals: list[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """Paint a BGR uint8 image: a textured background, then each object back to front."""
    background, textures = render_layers(rng, amodals, size)
    image = background
    for amodal, texture in zip(amodals, textures):
        image[amodal] = texture[amodal]
    return to_uint8(image)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float pixels clipped to [0, 255] as uint8."""
    return np.clip(image, 0, 255).astype(np.uint8)


def make_dataset(
    out_dir: Path, images: int, seed: int, opts: SynthOptions, shapes: Sequence[np.ndarray] | None = None
) -> tuple[Path, Path]:
    """Write ``modal.json`` (plain COCO: the masks as ``opts.outlines`` draws them), ``gt.json``
    (COCO-amodal, with the true visible masks) and, with ``render``, images; objects are
    procedural, or ``shapes`` (tight bool masks, see ``shapes_from``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    records, instances, annotations, results = [], [], [], {}
    h, w = opts.height, opts.width
    ids = CATEGORY_SETS[opts.categories]
    for index in range(images):
        rng = np.random.default_rng([seed, index])
        amodals, visibles, occluders = make_scene(rng, opts, shapes)
        outlined = visibles
        if any(opts.outlines):
            outlined = draw_outlines(np.random.default_rng([seed, index, 2]), amodals, visibles, opts.outlines)
        drawn = np.random.default_rng([seed, index, 1]).choice(ids, len(amodals))
        image_id = index + 1
        file_name = f"{image_id:06d}.png"
        source = {"id": image_id, "width": w, "height": h, "file_name": file_name}
        records.append(ImageRecord(image_id, w, h, file_name, source))
        result = ImageResult(image_id)
        first = len(instances) + 1
        for k, (amodal, visible) in enumerate(zip(amodals, visibles)):
            modal = encode_crop(Crop(visible), h, w)
            ann = _annotation(first + k, image_id, int(drawn[k]), modal)
            instances.append(Instance(first + k, image_id, ann["category_id"], modal, ann["bbox"], source=ann))
            if outlined[k] is not visible:
                ann = _annotation(first + k, image_id, int(drawn[k]), encode_crop(Crop(outlined[k]), h, w))
            annotations.append(ann)
            result.amodal[first + k] = encode_crop(Crop(amodal), h, w)
            result.edges += [(first + j, first + k, 1.0, None) for j in occluders[k]]
        results[image_id] = result
        if opts.render:
            (out_dir / "images").mkdir(exist_ok=True)
            cv2.imwrite(str(out_dir / "images" / file_name), render(rng, amodals, (h, w)))
    info = {
        "description": f"amodalize synth, seed {seed}",
        "synth": {"seed": seed, **opts.__dict__, "shapes": None if shapes is None else len(shapes)},
    }
    modal = {
        "info": info,
        "images": [r.source for r in records],
        "annotations": annotations,
        "categories": categories_of(ids),
    }
    dataset = Dataset(out_dir / "modal.json", "coco", records, instances, categories_of(ids), {"info": info})
    gt = augment(dataset, results, meta={"method": "ground truth", "synth": info["synth"]})
    write_json_atomic(out_dir / "modal.json", modal)
    write_json_atomic(out_dir / "gt.json", gt)
    return out_dir / "modal.json", out_dir / "gt.json"


def _annotation(ann_id: int, image_id: int, category_id: int, mask: dict) -> dict:
    """A plain COCO annotation of an RLE ``mask``."""
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "iscrowd": 0,
        "segmentation": mask,
        "bbox": rle_bbox(mask),
        "area": rle_area(mask),
    }


def shapes_from(datasets: Sequence[Dataset], width: int, height: int) -> list[np.ndarray]:
    """The objects of ``datasets`` as tight bool masks (amodal where annotated, else visible),
    rescaled from their images to a ``width`` x ``height`` canvas."""
    shapes = []
    for ds in datasets:
        sizes = {image.id: (image.height, image.width) for image in ds.images}
        for inst in ds.instances:
            crop = decode_crop(inst.amodal if inst.amodal is not None else inst.modal)
            if inst.iscrowd or crop.area < 16:
                continue
            shapes.append(to_canvas(crop.mask, sizes[inst.image_id], (height, width)))
    return [s for s in shapes if s.any()]


def to_canvas(mask: np.ndarray, image_size: tuple[int, int], canvas_size: tuple[int, int]) -> np.ndarray:
    """A tight bool mask from an image of ``image_size`` (h, w) nearest-resized by the factor that
    fits that image into ``canvas_size`` (h, w)."""
    scale = min(canvas_size[0] / image_size[0], canvas_size[1] / image_size[1])
    h, w = mask.shape
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
