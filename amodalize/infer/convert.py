"""Conversion of a chunk of images into amodal masks and an occlusion graph.

Within a chunk every instance is decoded once into a crop, the candidate pairs are found, then the
order graph and the amodal masks are computed either by a model-free baseline or by PCNet-M.
PCNet-M queries of the whole chunk go through one ``Completer`` in batches. Where chunks run (this
process, joblib workers, host worker processes around the model) is ``amodalize.infer.hosts``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from amodalize.data.masks import (
    EMPTY,
    Crop,
    completion_window,
    convex_hull,
    decode_crop,
    encode_crop,
    square_window,
    tight,
    union_window,
    union_within,
)
from amodalize.data.records import ImageRecord, ImageResult, Instance
from amodalize.errors import InputError
from amodalize.infer import baselines
from amodalize.infer.amodal import eraser_members, paste
from amodalize.infer.batcher import Completer
from amodalize.infer.fusion import IOU_FEATURES, IoUModel, OrderFusion, decide, iou_features, pair_features
from amodalize.infer.methods import AMODAL_METHODS, ORDER_METHODS
from amodalize.infer.order import edges, has_cycle, increment, order_from_increments, patches, soft_increment
from amodalize.infer.overlaps import (
    NESTED_CONFIDENCE,
    Overlap,
    count_kinds,
    decided_fronts,
    drawn_fronts,
    find_overlaps,
    partition,
    tempered,
)
from amodalize.infer.pairs import touching_pairs


@dataclass(frozen=True)
class ConvertOptions:
    """What ``convert`` computes.

    method: amodal completion: raw (visible mask as is), convex (its convex hull), convex-r (hull
        kept only under the instance's ancestors) or pcnet.
    order: ordering method: area, y-axis, convex (dual hull increments), pcnet (dual completion) or
        fused (dual completion and hull increments combined by ``fusion``).
    area_front: for ``order=area``, which mask is in front: smaller (COCOA) or larger (KINS).
    order_th: PCNet-M foreground threshold for ordering (reference: 0.1).
    amodal_th: PCNet-M foreground threshold for completion (reference: 0.2).
    amodal_mode: 'og' erases with all ancestors (order-grounded), 'nog' with all ordered neighbours.
    increment: 'code' counts growth inside the eraser (reference code), 'paper' all new pixels.
    eraser_dilate: image pixels to grow erasers by (and the clipping region with them), for masks
        with gaps between neighbours (reference: 0).
    gap: empty pixels between neighbouring masks that still count as touching (the measured
        annotation gap); the touching test reaches ``1 + max(gap, eraser_dilate)`` pixels
        (reference: 0, so 1).
    keep_visible: union the visible mask back into the completion (reference: the completion
        replaces it, which erodes visible boundaries at small input sizes).
    clip_to_occluders: keep new pixels only where the erasers (the occluders) are, since a hidden
        part can only lie under something (reference: no clipping).
    enlarge, side_ratio: inference crop side = max(sqrt(w*h*enlarge), side_ratio*w, side_ratio*h).
    completion_resize: how completion inputs are resized to the network: 'nearest' (as the
        ordering inputs, so an ordering forward is reused) or 'bilinear' (the reference).
    paste_resize: how a completion's P(fg) patch is brought to its window's size: 'binary'
        thresholds at the network's size, then resizes the mask (the reference: stair-stepped
        outlines on large objects); 'probability' resizes P(fg) bilinearly, then thresholds.
    complete_empty: also complete instances whose visible mask is empty (the reference does; the
        network then guesses from an empty input).
    skip_unoccluded: run no completion for an instance with nothing in front when clipping and
        keeping the visible mask make its result that visible mask anyway (the output is the same;
        off only to measure what it saves).
    fusion: for ``order=fused``, the weights of ``fusion.OrderFusion`` (from calibration); None
        orders by dual completion alone and gives no confidence.
    related: for ``order=fused``, which pairs get an order: 'pcnet' those whose two completion
        increments differ (as dual completion), 'any' also those whose hull increments differ
        (measured better on every set: docs/measurements.md, "Better than geometry").
    iou_model: the weights of ``fusion.IoUModel`` for each completion's ``amodal_confidence``
        (from calibration); None gives none.
    recentre: completion passes run again on a window around the previous pass's completion
        (0: the visible box's window only, the reference). The network learnt on windows around
        whole objects, so the first completion's box is the better centre (docs/measurements.md).
    recentre_th: a recentred pass's crop is set around where the last pass's P(fg) exceeds this
        (under the occluders, with the visible mask), when it is below ``amodal_th``, instead of
        around the completion, which stops short of a mostly hidden object so that a crop around
        it cuts the hidden part off again (0: around the completion). Measured: objects over half
        hidden +0.4 to +1.7 IoU on the procedural and real-shape sets, the COCOA demo's objects
        -0.8 at 0.1 (docs/measurements.md, "The hidden half"), so off by default.
    grow_to_occluders: an occluded object's first completion crop is set around its visible box
        grown this share of the way toward the box of its visible mask and its erasers within its
        ordering window, as the hidden part lies under them (0: around the visible box, the
        reference). Measured at 0.5: objects over half hidden +0.7 to +1.2 IoU on every standard
        set, no hidden-share bucket lower by more than 0.23 (docs/measurements.md, "The hidden half").
    max_aspect: an object whose box is longer than this many times its width is completed on a
        window narrowed across it (``masks.completion_window``), so that it fills the network's
        input as if it were only that elongated: a 15:1 pole is a few patch pixels thick in a square
        window (0: square windows, the reference; ordering always uses square ones).
    """

    method: str = "convex-r"
    order: str = "convex"
    area_front: str = "smaller"
    order_th: float = 0.1
    amodal_th: float = 0.2
    amodal_mode: str = "og"
    increment: str = "code"
    eraser_dilate: int = 0
    gap: int = 0
    keep_visible: bool = True
    clip_to_occluders: bool = True
    enlarge: float = 3.0
    side_ratio: float = 1.1
    completion_resize: str = "nearest"
    paste_resize: str = "probability"
    complete_empty: bool = False
    skip_unoccluded: bool = True
    fusion: tuple[float, ...] | None = None
    related: str = "any"
    iou_model: tuple[float, ...] | None = None
    recentre: int = 1
    max_aspect: float = 2.5
    recentre_th: float = 0.0
    grow_to_occluders: float = 0.5

    def __post_init__(self) -> None:
        if self.method not in AMODAL_METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose from {', '.join(AMODAL_METHODS)}")
        if self.order not in ORDER_METHODS:
            raise ValueError(f"unknown order method {self.order!r}; choose from {', '.join(ORDER_METHODS)}")

    @property
    def needs_model(self) -> bool:
        """True when PCNet-M does part of the work."""
        return self.method == "pcnet" or self.order in ("pcnet", "fused")


def check_settings(settings: dict) -> None:
    """Raise InputError naming any key of ``settings`` that is no ConvertOptions field (a misspelt
    option is caught where it is given, not at the first image)."""
    known = {f.name for f in fields(ConvertOptions)} - {"method", "order"}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise InputError("options", f"unknown option {', '.join(unknown)}; the options are {', '.join(sorted(known))}")


@dataclass
class Work:
    """One image in flight: its live instances, their visible crops (the input masks, or where they
    overlap the partition of ``infer.overlaps``) and network windows (square around each input box
    for ordering; completion narrows those of elongated objects and recentres those of the
    occluded), pairs and order; ``drawn`` the input masks where they overlap (else None)."""

    image: ImageRecord
    live: list[Instance]
    crops: list[Crop]
    windows: list[tuple[int, int, int, int]]
    pairs: list[tuple[int, int]]
    drawn: list[Crop] | None = None
    overlaps: list[Overlap] = field(default_factory=list)
    hulls: list[Crop] = field(default_factory=list)
    order: np.ndarray | None = None
    score: np.ndarray | None = None
    features: np.ndarray | None = None
    confidence: np.ndarray | None = None
    iou_features: np.ndarray | None = None
    iou: np.ndarray | None = None


def prepare(image: ImageRecord, instances: list[Instance], opts: ConvertOptions) -> Work:
    """One image's work: crops decoded, masks drawn over each other split as drawn
    (``overlaps.drawn_fronts``), candidate pairs found (touching ones and every overlapping one)."""
    live = [inst for inst in instances if not inst.iscrowd]
    drawn = [decode_crop(inst.modal) for inst in live]
    overlaps = find_overlaps(drawn)
    crops = partition(drawn, drawn_fronts(overlaps)) if overlaps else drawn
    windows = [square_window(inst.bbox, opts.enlarge, opts.side_ratio) for inst in live]
    pairs = touching_pairs(crops, 1 + max(opts.gap, opts.eraser_dilate))
    if overlaps:
        shared = {(o.i, o.j) for o in overlaps if crops[o.i] is not EMPTY and crops[o.j] is not EMPTY}
        pairs = sorted(set(pairs) | shared)
    work = Work(image, live, crops, windows, pairs, drawn if overlaps else None, overlaps)
    set_hulls(work, opts)
    return work


def set_hulls(work: Work, opts: ConvertOptions) -> None:
    """The convex hulls of the visible crops, where the ordering or completion method uses them."""
    if opts.order in ("convex", "fused") or opts.method in ("convex", "convex-r"):
        work.hulls = [convex_hull(c) for c in work.crops]


def settle_overlaps(work: Work, opts: ConvertOptions) -> None:
    """Put each nested mask in front of its container, temper the confidence of the other pairs drawn
    over each other (``overlaps.tempered``) and give every shared pixel to the object in front
    (``overlaps.decided_fronts``), once the order of the overlapping pairs is decided."""
    for o in work.overlaps:
        i, j = o.i, o.j
        if o.kind == "nested":
            front, back = o.inner, o.outer
            work.order[front, back], work.order[back, front] = 1, -1
            work.score[front, back] = work.score[back, front] = max(o.share_i, o.share_j)
            if work.confidence is not None:
                work.confidence[i, j] = work.confidence[j, i] = NESTED_CONFIDENCE
        elif work.confidence is not None and work.order[i, j] != 0:
            work.confidence[i, j] = work.confidence[j, i] = tempered(float(work.confidence[i, j]), o.kind)
    work.crops = partition(work.drawn, decided_fronts(work.overlaps, work.order))
    set_hulls(work, opts)


def _order_baseline(work: Work, opts: ConvertOptions) -> None:
    if opts.order == "area":
        work.order, work.score = baselines.order_area(work.crops, work.pairs, opts.area_front)
    elif opts.order == "y-axis":
        work.order, work.score = baselines.order_yaxis(work.crops, work.pairs)
    else:
        work.order, work.score = baselines.order_convex(work.crops, work.hulls, work.pairs)


def run_queries(
    works: list[Work],
    queries: list[tuple[int, int, tuple[int, ...]]],
    completer: Completer,
    opts: ConvertOptions,
    resize: str = "nearest",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Modal patches, eraser patches and P(fg), each ``[Q, S, S]``, for (work index, target,
    eraser members) queries, the patches resized by ``resize`` (see ``order.patches``) batch by
    batch as the completer asks for them."""
    size = completer.input_size
    modal = np.zeros((len(queries), size, size), np.uint8)
    eraser = np.zeros_like(modal)
    category = np.zeros(len(queries), np.float32)

    def build(part: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        for q in range(part.start, part.stop):
            w, t, members = queries[q]
            work = works[w]
            modal[q], eraser[q] = patches(work.crops, work.windows, t, list(members), size, opts.eraser_dilate, resize)
            category[q] = work.live[t].category_id
        return modal[part], eraser[part], category[part]

    return modal, eraser, completer.run(len(queries), build)


def order_pcnet(works: list[Work], opts: ConvertOptions, completer: Completer) -> dict:
    """Dual completion of every touching pair; returns the probabilities worth reusing."""
    queries = [(w, t, (e,)) for w, work in enumerate(works) for i, j in work.pairs for t, e in ((i, j), (j, i))]
    modal, eraser, prob = run_queries(works, queries, completer, opts) if queries else (None, None, [])
    occ = [np.zeros((len(work.live),) * 2) for work in works]
    soft = [np.zeros((len(work.live),) * 2) for work in works]
    for q, (w, t, (e,)) in enumerate(queries):
        window = works[w].windows[t]
        occ[w][t, e] = increment(prob[q], modal[q], eraser[q], window, opts.order_th, opts.increment)
        if opts.order == "fused":
            soft[w][t, e] = soft_increment(prob[q], modal[q], eraser[q], window)
    for w, work in enumerate(works):
        work.order, work.score = order_from_increments(occ[w], work.pairs)
        if opts.order == "fused":
            convex = baselines.convex_increments(work.crops, work.hulls, work.pairs)
            local = baselines.local_convex_increments(work.crops, work.pairs)
            work.features = pair_features([occ[w], soft[w], convex, local], [c.area for c in work.crops], work.pairs)
            if opts.fusion is not None:
                fuse(work, convex, opts)
    return {query: prob[q] for q, query in enumerate(queries)}


def fuse(work: Work, convex: np.ndarray, opts: ConvertOptions) -> None:
    """Direct the related pairs of ``work`` by the fused evidence and set their confidence."""
    related = np.array([work.order[i, j] != 0 for i, j in work.pairs], dtype=bool)
    if opts.related == "any":
        related |= np.array([convex[i, j] != convex[j, i] for i, j in work.pairs], dtype=bool)
    fusion = OrderFusion(tuple(opts.fusion))
    work.order, work.confidence = decide(work.features, work.pairs, related, fusion, len(work.live))


def amodal_pcnet(works: list[Work], opts: ConvertOptions, completer: Completer, reuse: dict) -> list[list[Crop]]:
    """Complete every instance with its erasers; a query identical to an ordering one is not rerun,
    and none is run whose answer cannot change the result."""
    wanted = [
        (w, i, tuple(eraser_members(work.order, i, opts.amodal_mode)))
        for w, work in enumerate(works)
        for i in range(len(work.live))
    ]
    if not opts.complete_empty:
        wanted = [q for q in wanted if works[q[0]].crops[q[1]] is not EMPTY]
    if opts.skip_unoccluded and opts.clip_to_occluders and opts.keep_visible:  # clipped back to the visible mask
        wanted = [q for q in wanted if q[2]]
    narrowed = set()
    for w, i, members in wanted:
        box = grown_box(works[w], i, members, opts.grow_to_occluders)
        window = completion_window(box, opts.enlarge, opts.side_ratio, opts.max_aspect)
        if window != works[w].windows[i]:
            works[w].windows[i] = window
            narrowed.add((w, i, members))
    # the ordering patches are nearest-resized on square windows
    probs = {q: p for q, p in reuse.items() if q not in narrowed} if opts.completion_resize == "nearest" else {}
    fresh = [q for q in wanted if q not in probs]
    if fresh:
        probs.update(zip(fresh, run_queries(works, fresh, completer, opts, opts.completion_resize)[2]))
    out = [list(work.crops) for work in works]
    features = [np.zeros((len(work.live), len(IOU_FEATURES))) for work in works]
    for w, work in enumerate(works):
        for i, crop in enumerate(work.crops):
            features[w][i] = iou_features(0.0, 0.0, False, at_border(crop, work.image))
    for w, i, members in wanted:
        out[w][i] = completion(probs[(w, i, members)], works[w], i, members, opts.amodal_th, opts)
    occluded = [q for q in wanted if q[2]]  # what they complete can move their window
    for _ in range(opts.recentre):
        again = [q for q in occluded if out[q[0]][q[1]] is not EMPTY]
        if not again:
            break
        for w, i, members in again:
            extent = out[w][i]
            if 0 < opts.recentre_th < opts.amodal_th:
                extent = completion(probs[(w, i, members)], works[w], i, members, opts.recentre_th, opts)
            x0, y0, x1, y1 = extent.window
            box = (x0, y0, x1 - x0, y1 - y0)
            works[w].windows[i] = completion_window(box, opts.enlarge, opts.side_ratio, opts.max_aspect)
        probs.update(zip(again, run_queries(works, again, completer, opts, opts.completion_resize)[2]))
        for w, i, members in again:
            out[w][i] = completion(probs[(w, i, members)], works[w], i, members, opts.amodal_th, opts)
    for w, i, members in wanted:
        prob = probs[(w, i, members)]
        visible, full = works[w].crops[i].area, out[w][i].area
        features[w][i] = iou_features(
            (full - visible) / full if full else 0.0,
            undecided(prob),
            bool(members),
            at_border(works[w].crops[i], works[w].image),
        )
    for work, f in zip(works, features):
        work.iou_features = f
        if opts.iou_model is not None:
            work.iou = IoUModel(tuple(opts.iou_model)).estimate(f)
    return out


def grown_box(work: Work, i: int, members: tuple[int, ...], share: float) -> list[float]:
    """Instance ``i``'s visible box (x, y, w, h) grown ``share`` of the way toward the box of its
    visible mask united with its erasers ``members`` within its window (the ordering one)."""
    box = list(work.live[i].bbox)
    if not members or share <= 0 or work.crops[i] is EMPTY:
        return box
    window = work.windows[i]
    cover = union_within([work.crops[m] for m in members], window) | work.crops[i].within(window)
    near = tight(cover, window[0], window[1]).window
    ends = [box[0], box[1], box[0] + box[2], box[1] + box[3]]
    x0, y0, x1, y1 = (a + share * (b - a) for a, b in zip(ends, near))
    return [x0, y0, x1 - x0, y1 - y0]


def undecided(prob: np.ndarray) -> float:
    """How undecided a P(fg) patch is about the shape it predicts: ``Σ 4p(1-p) / |p > 0.5|``."""
    shape = np.count_nonzero(prob > 0.5)
    return float(np.sum(4 * prob * (1 - prob)) / shape) if shape else 1.0


def at_border(crop: Crop, image: ImageRecord) -> bool:
    """True when a visible mask reaches the image border (the object may be cut by the frame)."""
    if crop is EMPTY:
        return False
    x0, y0, x1, y1 = crop.window
    return x0 <= 0 or y0 <= 0 or x1 >= image.width or y1 >= image.height


def completion(
    prob: np.ndarray, work: Work, i: int, members: tuple[int, ...], threshold: float, opts: ConvertOptions
) -> Crop:
    """Instance ``i``'s amodal crop from its P(fg) patch ``[S, S]`` completed behind ``members``:
    thresholded, pasted back, clipped to the (grown) erasers and united with the visible mask as
    ``opts`` asks."""
    crops, image = work.crops, work.image
    crop = paste(prob, work.windows[i], threshold, image.height, image.width, opts.paste_resize)
    if opts.clip_to_occluders and crop is not EMPTY:
        window = crop.window
        cover = union_within([crops[m] for m in members], window, opts.eraser_dilate) | crops[i].within(window)
        crop = tight(crop.mask & cover, window[0], window[1])
    if opts.keep_visible:
        window = crops[i].window if crop is EMPTY else union_window(crop.window, crops[i].window)
        crop = Crop(crop.within(window) | crops[i].within(window), window[0], window[1])
    return crop


def _amodal_baseline(work: Work, opts: ConvertOptions) -> list[Crop] | None:
    if opts.method == "raw":
        return None
    if opts.method == "convex":
        return work.hulls
    return baselines.amodal_convex_r(work.crops, work.hulls, work.order)


def _finish(work: Work, completed: list[Crop] | None) -> ImageResult:
    """The image's result; where masks overlapped, every amodal mask holds its input mask (drawn
    pixels, seen or drawn through) and ``visible`` holds the partition's part of those that lost pixels."""
    result = ImageResult(work.image.id, pairs_tested=len(work.pairs), cyclic=has_cycle(work.order))
    drawn = work.drawn or work.crops
    if work.overlaps:
        result.overlaps = count_kinds(work.overlaps)
        if completed is None:
            completed = work.crops
        completed = [_with(c, d) for c, d in zip(completed, drawn)]
        for k, inst in enumerate(work.live):
            if work.crops[k] is not drawn[k]:
                result.visible[inst.id] = encode_crop(work.crops[k], work.image.height, work.image.width)
    confidence = work.confidence
    result.edges = [
        (work.live[a].id, work.live[b].id, s, None if confidence is None else round(float(confidence[a, b]), 4))
        for a, b, s in edges(work.order, work.score)
    ]
    for k, inst in enumerate(work.live):
        if drawn[k] is EMPTY and (completed is None or completed[k] is EMPTY):
            continue  # a box-only or empty annotation: nothing to complete, left as it came
        if work.iou is not None:
            result.amodal_confidence[inst.id] = round(float(work.iou[k]), 4)
        if completed is None:
            result.amodal[inst.id] = inst.modal
        else:
            result.amodal[inst.id] = encode_crop(completed[k], work.image.height, work.image.width)
            if not np.any(work.order[k] == -1):  # nothing in front: completion should keep its size
                result.calibration[0] += completed[k].area
                result.calibration[1] += drawn[k].area
    return result


def _with(crop: Crop, drawn: Crop) -> Crop:
    """``crop`` united with the input mask ``drawn``."""
    if crop is EMPTY or drawn is EMPTY:
        return drawn if crop is EMPTY else crop
    window = union_window(crop.window, drawn.window)
    return Crop(crop.within(window) | drawn.within(window), window[0], window[1])


def convert_chunk(
    items: list[tuple[ImageRecord, list[Instance]]], opts: ConvertOptions, completer: Completer | None = None
) -> list[ImageResult]:
    """Order and complete the non-crowd instances of a few images (``completer`` for PCNet-M)."""
    works = [prepare(image, insts, opts) for image, insts in items]
    reuse: dict = {}
    if opts.order in ("pcnet", "fused"):
        reuse = order_pcnet(works, opts, completer)
    else:
        for work in works:
            _order_baseline(work, opts)
    for w, work in enumerate(works):
        if work.overlaps:  # its ordering patches were made on the partition as drawn
            settle_overlaps(work, opts)
            reuse = {q: p for q, p in reuse.items() if q[0] != w}
    if opts.method == "pcnet":
        completed = amodal_pcnet(works, opts, completer, reuse)
    else:
        completed = [_amodal_baseline(work, opts) for work in works]
    return [_finish(work, c) for work, c in zip(works, completed)]
