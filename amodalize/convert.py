"""Conversion of a modal dataset into amodal masks and an occlusion graph, image by image.

The per-image work (``convert_image``) is pure; ``convert_dataset`` spreads images over worker
processes with joblib and reports progress through a callback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from joblib import Parallel, delayed

from amodalize.data.masks import convex_hull, decode_crop, encode_crop
from amodalize.data.records import Dataset, ImageRecord, ImageResult, Instance
from amodalize.infer import baselines
from amodalize.infer.order import edges
from amodalize.infer.pairs import touching_pairs

AMODAL_METHODS = ("raw", "convex", "convex-r")
ORDER_METHODS = ("area", "y-axis", "convex")


@dataclass(frozen=True)
class ConvertOptions:
    """What ``convert`` computes.

    method: amodal completion: raw (visible mask as is), convex (its convex hull), convex-r
        (hull kept only under the instance's ancestors).
    order: ordering method: area, y-axis or convex (dual hull increments).
    area_front: for ``order=area``, which mask is in front: smaller (COCOA) or larger (KINS).
    """

    method: str = "convex-r"
    order: str = "convex"
    area_front: str = "smaller"

    def __post_init__(self) -> None:
        if self.method not in AMODAL_METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose from {', '.join(AMODAL_METHODS)}")
        if self.order not in ORDER_METHODS:
            raise ValueError(f"unknown order method {self.order!r}; choose from {', '.join(ORDER_METHODS)}")


def convert_image(image: ImageRecord, instances: list[Instance], opts: ConvertOptions) -> ImageResult:
    """Order and complete the non-crowd instances of one image."""
    live = [inst for inst in instances if not inst.iscrowd]
    crops = [decode_crop(inst.modal) for inst in live]
    pairs = touching_pairs(crops)
    need_hulls = opts.order == "convex" or opts.method != "raw"
    hulls = [convex_hull(c) for c in crops] if need_hulls else []
    if opts.order == "area":
        order, score = baselines.order_area(crops, pairs, opts.area_front)
    elif opts.order == "y-axis":
        order, score = baselines.order_yaxis(crops, pairs)
    else:
        order, score = baselines.order_convex(crops, hulls, pairs)
    result = ImageResult(image.id, pairs_tested=len(pairs))
    result.edges = [(live[a].id, live[b].id, s) for a, b, s in edges(order, score)]
    if opts.method == "raw":
        result.amodal = {inst.id: inst.modal for inst in live}
        return result
    completed = hulls if opts.method == "convex" else baselines.amodal_convex_r(crops, hulls, order)
    for inst, crop in zip(live, completed):
        result.amodal[inst.id] = encode_crop(crop, image.height, image.width)
    return result


def _convert_chunk(items: list[tuple[ImageRecord, list[Instance]]], opts: ConvertOptions) -> list[ImageResult]:
    return [convert_image(image, insts, opts) for image, insts in items]


def convert_dataset(
    dataset: Dataset,
    opts: ConvertOptions,
    workers: int = 1,
    chunk_size: int = 16,
    on_progress: Callable[[int], None] | None = None,
) -> dict[int, ImageResult]:
    """Convert every image; ``workers`` processes (-1: all cores); results keyed by image id."""
    items = [(image, dataset.by_image[image.id]) for image in dataset.images]
    chunks = [items[k : k + chunk_size] for k in range(0, len(items), chunk_size)]
    if workers == 1 or len(chunks) == 1:
        runs: Iterator[list[ImageResult]] = (_convert_chunk(c, opts) for c in chunks)
    else:
        runs = Parallel(n_jobs=workers, return_as="generator")(delayed(_convert_chunk)(c, opts) for c in chunks)
    results: dict[int, ImageResult] = {}
    for chunk_results in runs:
        for r in chunk_results:
            results[r.image_id] = r
        if on_progress:
            on_progress(len(chunk_results))
    return results
