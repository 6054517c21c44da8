"""Thresholds chosen without ground truth: synthetic occlusions built from the dataset's own
instances, whose order and full masks are known by construction.

Each scene is one held-out instance A seen through its inference window, with another instance B
placed over it by the training recipe (scaled to A's window, cutting an accepted share of A) and
the dataset's measured gap left between B and what stays visible of A. The scenes go through the
same code as ``convert`` (pair test, dual completion, completion behind B); the ordering threshold
is then chosen for ordering accuracy, the completion threshold for the pooled IoU
of A's completion, and the eraser dilation for the sum of both.

Then the ordering fusion and the IoU model (``amodalize.infer.fusion``) are fitted on scenes that
look more like real ones: several of the dataset's shapes layered in clusters on a canvas of its
image size, pairs that touch without occluding, objects cut by the border, and the measured gap
(with its spread) between neighbours, all converted by ``convert``'s own code at the chosen settings.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from amodalize.config import DataConfig
from amodalize.data.bank import InstanceBank, place_eraser, sample_window
from amodalize.data.masks import (
    Crop,
    dilate_square,
    encode_crop,
    erode_square,
    resample,
    rle_bbox,
    square_window,
    tight,
)
from amodalize.data.records import ImageRecord, Instance
from amodalize.data.synth import layer, place_cluster, to_canvas
from amodalize.infer import baselines
from amodalize.infer.batcher import Completer
from amodalize.infer.convert import ConvertOptions, amodal_pcnet, completion, fuse, order_pcnet, prepare, run_queries
from amodalize.infer.fusion import fit_iou, fit_order
from amodalize.infer.order import increment

ORDER_GRID = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7)
AMODAL_GRID = (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6)
# Accuracy or IoU within this of the best counts as a tie; the middle of the tied range is chosen.
TIE = 0.005
# Cuts smaller than this share of A hide too little to order; they only add noise to the choice.
MIN_CUT = 0.05
METHOD = (
    "held-out instances of the training data, each with another instance placed over it by the "
    "training recipe and the measured gap left between them; for each eraser dilation the ordering "
    "threshold of best ordering accuracy and the completion threshold of best pooled IoU (the middle "
    "of near-ties), and the dilation of best accuracy + IoU"
)


@dataclass(frozen=True)
class Calibration:
    """What calibration chose and how well it did on its scenes.

    order_th, amodal_th: foreground thresholds for ordering and completion.
    eraser_dilate: image pixels to grow erasers by.
    gap: the gap (image pixels) the scenes were built with.
    samples: scenes used; order_acc, iou: their ordering accuracy and pooled IoU of A at the choice.
    fusion, iou_model: the fitted ``OrderFusion`` and ``IoUModel`` (their ``to_json``) with how
        they were fitted, or None.
    """

    order_th: float
    amodal_th: float
    eraser_dilate: int
    gap: int
    samples: int
    order_acc: float
    iou: float
    method: str = METHOD
    fusion: dict | None = None
    iou_model: dict | None = None

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def dilation_candidates(gap: int) -> list[int]:
    """Eraser dilations worth trying for masks ``gap`` pixels apart: none, part of, all of and
    more than the gap."""
    return sorted({0, gap // 2, gap, gap + max(1, gap // 2), 2 * gap})


def occlusion_scene(
    bank: InstanceBank, target: int, eraser: int, rng: np.random.Generator, cfg: DataConfig, gap: int, max_side: int
) -> tuple[ImageRecord, list[Instance], np.ndarray] | None:
    """One scene: instance ``target`` (A, id 1) partly behind ``eraser`` (B, id 2) with ``gap``
    image pixels between them, on a canvas of A's inference window (at most ``max_side`` pixels a
    side, rescaled with the gap). Returns (image, [A, B] with visible masks, A's full mask), or None
    when B hides nothing of A or too little of A stays visible."""
    window = square_window(bank.boxes[target], cfg.enlarge_box, cfg.min_side_ratio)
    side = min(window[2] - window[0], max_side)
    a = resample(bank.crop(target), window, side)
    b_window, flip = sample_window(bank, eraser, rng, cfg, shift=False)
    b = resample(bank.crop(eraser), b_window, side)
    b = place_eraser(b[:, ::-1] if flip else b, a, rng, dataclasses.replace(cfg, min_cut_ratio=MIN_CUT))
    # the gap is split between the two masks, as annotators draw each one a little inside its object
    k = round(gap * side / (window[2] - window[0]))
    visible = a & ~dilate_square(b, k - k // 2)
    front = erode_square(b, k // 2)
    if not (a & b).any() or np.count_nonzero(visible) < 16 or not front.any():
        return None
    image = ImageRecord(0, side, side, None)
    instances = []
    for ann_id, (k_bank, mask) in enumerate(((target, visible), (eraser, front)), start=1):
        rle = encode_crop(Crop(mask), side, side)
        instances.append(Instance(ann_id, 0, int(bank.categories[k_bank]), rle, rle_bbox(rle)))
    return image, instances, a


def build_scenes(
    bank: InstanceBank, targets: np.ndarray, erasers: np.ndarray, cfg: DataConfig, gap: int, seed: int, n: int
) -> list[tuple[ImageRecord, list[Instance], np.ndarray]]:
    """``n`` occlusion scenes (fewer if too many draws fail), a function of ``seed``."""
    scenes = []
    for k in range(4 * n):
        if len(scenes) == n:
            break
        rng = np.random.default_rng([seed, 5, k])
        target, eraser = int(targets[k % len(targets)]), int(erasers[rng.integers(len(erasers))])
        scene = occlusion_scene(bank, target, eraser, rng, cfg, gap, 4 * cfg.input_size)
        if scene is not None:
            scenes.append(scene)
    return scenes


def _middle_of_best(scores: list[float], values: tuple[float, ...]) -> tuple[float, float]:
    """The value in the middle of those scoring within TIE of the best, and the best score."""
    best = max(scores)
    tied = [v for v, s in zip(values, scores) if s >= best - TIE]
    return tied[len(tied) // 2], best


def _score_dilation(scenes: list, completer: Completer, opts: ConvertOptions) -> tuple[float, float, float, float]:
    """For one dilation: the chosen (order_th, accuracy, amodal_th, iou) over ``scenes``."""
    works = [prepare(image, insts, opts) for image, insts, _ in scenes]
    queries = [(w, t, (1 - t,)) for w, work in enumerate(works) if work.pairs for t in (0, 1)]
    modal, eraser, prob = run_queries(works, queries, completer, opts) if queries else (None, None, None)
    row = {q: n for n, q in enumerate(queries)}

    def misordered(w: int, th: float) -> bool:
        """True unless B is found in front of A (index 0): A must grow more behind B than B behind A."""
        if not works[w].pairs:
            return True
        qa, qb = row[(w, 0, (1,))], row[(w, 1, (0,))]
        grow_a = increment(prob[qa], modal[qa], eraser[qa], works[w].windows[0], th, opts.increment)
        grow_b = increment(prob[qb], modal[qb], eraser[qb], works[w].windows[1], th, opts.increment)
        return not grow_a > grow_b

    accuracy = [1 - float(np.mean([misordered(w, th) for w in range(len(works))])) for th in ORDER_GRID]
    order_th, acc = _middle_of_best(accuracy, ORDER_GRID)
    ordered = [not misordered(w, order_th) for w in range(len(works))]
    ious = []
    for th in AMODAL_GRID:
        inter = union = 0
        for w, (work, (_, _, full)) in enumerate(zip(works, scenes)):
            if ordered[w]:
                crop = completion(prob[row[(w, 0, (1,))]], work, 0, (1,), th, opts)
            else:  # nothing in front of A: it keeps its visible mask
                crop = work.crops[0]
            pred = crop.within((0, 0, full.shape[1], full.shape[0]))
            inter += np.count_nonzero(pred & full)
            union += np.count_nonzero(pred | full)
        ious.append(inter / union)
    amodal_th, iou = _middle_of_best(ious, AMODAL_GRID)
    return order_th, acc, amodal_th, iou


def calibrate(
    bank: InstanceBank,
    targets: np.ndarray,
    erasers: np.ndarray,
    cfg: DataConfig,
    gap: int,
    completer: Completer,
    seed: int = 0,
    samples: int = 300,
    fusion: bool = True,
) -> Calibration:
    """Thresholds and eraser dilation for data whose neighbours lie ``gap`` pixels apart, chosen
    on ``samples`` synthetic occlusions of ``targets`` (held-out instances) by ``erasers``; with
    ``fusion``, the ordering fusion and IoU model fitted at them too."""
    scenes = build_scenes(bank, targets, erasers, cfg, gap, seed, samples)
    if not scenes:
        raise ValueError("no instance pair makes an occlusion scene to calibrate on")
    best = None
    for dilate in dilation_candidates(gap):
        opts = ConvertOptions("pcnet", "pcnet", eraser_dilate=dilate, gap=gap)
        order_th, acc, amodal_th, iou = _score_dilation(scenes, completer, opts)
        if best is None or acc + iou > best.order_acc + best.iou + 1e-9:
            best = Calibration(
                order_th, amodal_th, dilate, gap, len(scenes), round(float(acc), 4), round(float(iou), 4)
            )
    if not fusion:
        return best
    chosen = ConvertOptions(
        "pcnet", "fused", order_th=best.order_th, amodal_th=best.amodal_th, eraser_dilate=best.eraser_dilate, gap=gap
    )
    fitted = fit_fusion(bank, gap, completer, chosen, seed, fusion_scenes(bank, samples))
    if fitted is None:
        return best
    return dataclasses.replace(best, fusion=fitted[0], iou_model=fitted[1])


# Shapes drawn from the dataset to build the layered scenes of the fusion fit.
FUSION_SHAPES = 400
FUSION_METHOD = (
    "scenes of 3-8 of the dataset's own shapes (visible masks) layered in clusters on a canvas of its "
    "median image size, with the measured gap (0.5-1.5x) between neighbours; logistic regression "
    "without intercept of the true front/back of their occluded candidate pairs on the features, "
    "and least squares of each object's completion IoU on its features"
)


def layered_scenes(
    bank: InstanceBank, gap: int, seed: int, n: int
) -> list[tuple[ImageRecord, list[Instance], list[np.ndarray], list[list[int]]]]:
    """``n`` scenes of the bank's shapes: (image, visible-mask instances, full masks, direct
    occluders), objects listed back to front, a function of ``seed``."""
    rng = np.random.default_rng([seed, 6])
    height, width = (int(v) for v in np.median(bank.image_sizes[bank.image_index], axis=0))
    scale = min(1.0, 640 / max(height, width))
    height, width = max(32, round(height * scale)), max(32, round(width * scale))
    picks = rng.choice(len(bank), size=min(len(bank), FUSION_SHAPES), replace=False)
    shapes = [to_canvas(bank.crop(int(k)).mask, bank.image_sizes[bank.image_index[k]], (height, width)) for k in picks]
    shapes = [m for m in shapes if np.count_nonzero(m) >= 16]
    if not shapes:
        return []
    scenes = []
    for k in range(n):
        rng = np.random.default_rng([seed, 7, k])
        candidates = place_cluster(rng, shapes, int(rng.integers(3, 9)), height, width)
        spread = round(gap * rng.uniform(0.5, 1.5))
        amodals, visibles, occluders = layer(candidates, 0.2, 16, erode=spread // 2, cut=spread % 2)
        if len(amodals) < 2:
            continue
        image = ImageRecord(k, width, height, None)
        instances = []
        for ann_id, visible in enumerate(visibles, start=1):
            rle = encode_crop(tight(visible), height, width)  # runs of the object's box, not the canvas
            instances.append(Instance(ann_id, k, 1, rle, rle_bbox(rle)))
        scenes.append((image, instances, amodals, occluders))
    return scenes


def fusion_scenes(bank: InstanceBank, samples: int) -> int:
    """Layered scenes for a calibration of ``samples`` two-object scenes: a fifth as many (each holds
    several pairs; 60 for 300 fitted as well as 120 over three seeds, in half the time), and no more
    than four per shape the bank holds (a tiny dataset varies little)."""
    return max(1, min(samples // 5, 4 * len(bank)))


def fit_fusion(
    bank: InstanceBank, gap: int, completer: Completer, opts: ConvertOptions, seed: int = 0, n: int = 120
) -> tuple[dict, dict] | None:
    """The ordering fusion and IoU model for ``opts`` (its thresholds and dilation), fitted on ``n``
    layered scenes of the bank's shapes at ``gap``; their ``to_json`` records, or None when the
    scenes hold no occluded candidate pair."""
    scenes = layered_scenes(bank, gap, seed, n)
    opts = dataclasses.replace(opts, method="pcnet", order="fused", fusion=None, iou_model=None)
    works = [prepare(image, insts, opts) for image, insts, _, _ in scenes]
    reuse = order_pcnet(works, opts, completer)
    rows, front = [], []
    for work, (_, _, _, occluders) in zip(works, scenes):
        for k, (i, j) in enumerate(work.pairs):
            i_front, j_front = i in occluders[j], j in occluders[i]
            if i_front != j_front:
                rows.append(work.features[k])
                front.append(i_front)
    if not rows:
        return None
    fusion = fit_order(np.array(rows), np.array(front))
    opts = dataclasses.replace(opts, fusion=fusion.weights)
    for work in works:
        fuse(work, baselines.convex_increments(work.crops, work.hulls, work.pairs), opts)
    completed = amodal_pcnet(works, opts, completer, reuse)
    features, ious = [], []
    for work, crops, (_, _, amodals, _) in zip(works, completed, scenes):
        for k, (crop, full) in enumerate(zip(crops, amodals)):
            pred = crop.within((0, 0, work.image.width, work.image.height))
            union = np.count_nonzero(pred | full)
            ious.append(np.count_nonzero(pred & full) / union if union else 1.0)
            features.append(work.iou_features[k])
    iou_model = fit_iou(np.array(features), np.array(ious))
    extra = {"scenes": len(scenes), "gap": gap, "method": FUSION_METHOD}
    return {**fusion.to_json(), **extra}, {**iou_model.to_json(), **extra}
