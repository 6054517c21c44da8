"""Scoring of predicted amodal masks and order against ground truth (reference protocol §6).

Ordering: the GT order of every touching pair comes from the masks (``occ_ij = |M_i ∩ G_j|``, ties
to the lower index), or from annotations with ``gt_order="annotated"``; accuracy counts GT-occluded
pairs whose predicted order matches (a missing or reversed prediction is wrong).
Amodal: pooled IoU ``Σ∩ / Σ∪`` over all instances (the paper's "mIoU"), mean per-instance IoU over
all and over occluded instances, and pooled/mean IoU by GT occlusion-rate bin and, for the occluded
objects, by hidden share of the true mask (< 25%, 25-50%, > 50%), each with the mean share of the
true area the predictions miss and the mean share they add outside it.
Confidence, where the prediction carries it: reliability tables of the edges' ``confidence``
(predicted edges of GT-occluded pairs: right direction or not) and of ``amodal_confidence``
(estimated against the true IoU), with the expected calibration error over 10 equal bins.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from amodalize.check.review import least_confident
from amodalize.data.masks import decode_crop, rle_area, rle_intersection_area
from amodalize.data.records import Dataset, Instance
from amodalize.errors import InputError
from amodalize.infer.pairs import touching_pairs

# Upper edges of the occlusion-rate bins (the first bin holds unoccluded instances only).
OCCLUSION_BINS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
# Bins of the reliability tables: edge confidences lie in [EDGE_LOW, 1], IoU estimates in [0, 1].
RELIABILITY_BINS = 10
EDGE_LOW = 0.5
# Outcome draws behind ``if_calibrated``: enough for its median and 90th percentile to settle; at
# most DRAW_BUDGET drawn outcomes in all (many edges need fewer draws: their spread is small), and
# DRAW_ELEMENTS at a time (memory stays flat).
CALIBRATED_DRAWS = 2000
MIN_DRAWS = 200
DRAW_BUDGET = 20_000_000
DRAW_ELEMENTS = 2_000_000


# Upper edges of the buckets of occluded objects by the hidden share of their true amodal mask.
HIDDEN_BUCKETS = (0.25, 0.5, 1.0)


@dataclass
class _Tally:
    """A group of objects: summed intersection and union, and per object its IoU and the shares of
    its true area the prediction leaves out (``missing``) and adds outside it (``extra``)."""

    inter: float = 0.0
    union: float = 0.0
    ious: list[float] = field(default_factory=list)
    missing: list[float] = field(default_factory=list)
    extra: list[float] = field(default_factory=list)

    def add(self, inter: int, union: int, truth: int = 0, predicted: int = 0) -> None:
        self.inter += inter
        self.union += union
        self.ious.append(inter / union if union else 1.0)
        if truth:
            self.missing.append((truth - inter) / truth)
            self.extra.append((predicted - inter) / truth)

    def row(self, label: str) -> dict:
        """The group's figures: objects, pooled and mean IoU, mean missing and extra area."""
        return {
            "bin": label,
            "instances": len(self.ious),
            "pooled_iou": self.pooled,
            "miou": self.mean,
            "missing": float(np.mean(self.missing)) if self.missing else None,
            "extra": float(np.mean(self.extra)) if self.extra else None,
        }

    @property
    def pooled(self) -> float | None:
        return self.inter / self.union if self.union else None

    @property
    def mean(self) -> float | None:
        return float(np.mean(self.ious)) if self.ious else None


def check_matching(pred: Dataset, gt: Dataset) -> None:
    """Raise unless both files hold the same non-crowd annotation ids on the same images."""
    if not gt.has_amodal:
        raise InputError(gt.path, "has no amodal masks to evaluate against (a plain COCO file is modal only)")
    p = {i.id: i.image_id for i in pred.instances if not i.iscrowd}
    g = {i.id: i.image_id for i in gt.instances if not i.iscrowd}
    missing, unknown = sorted(set(g) - set(p)), sorted(set(p) - set(g))
    if missing or unknown:
        parts = []
        if unknown:
            parts.append(f"ids not in the GT: {unknown[:5]}{' ...' if len(unknown) > 5 else ''}")
        if missing:
            parts.append(f"GT ids missing: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        raise InputError(pred.path, f"annotation ids do not match {gt.path} ({'; '.join(parts)})")
    moved = [k for k in g if p[k] != g[k]]
    if moved:
        raise InputError(pred.path, f"annotation {moved[0]} lies on image {p[moved[0]]}, the GT says {g[moved[0]]}")


def gt_order_from_masks(insts: list[Instance]) -> dict[tuple[int, int], int]:
    """GT order of touching pairs ``(i, j)``, ``i < j``: +1 when i occludes j, -1 the reverse, 0 none."""
    crops = [decode_crop(inst.modal) for inst in insts]
    out = {}
    for i, j in touching_pairs(crops):
        occ_ij = rle_intersection_area(insts[i].modal, insts[j].amodal)
        occ_ji = rle_intersection_area(insts[j].modal, insts[i].amodal)
        out[(i, j)] = 0 if occ_ij == occ_ji == 0 else (1 if occ_ij >= occ_ji else -1)
    return out


def gt_order_annotated(insts: list[Instance]) -> dict[tuple[int, int], int]:
    """GT order of the annotated pairs (``occluded_by`` or COCOA ``depth_constraint``)."""
    index = {inst.id: k for k, inst in enumerate(insts)}
    out = {}
    for k, inst in enumerate(insts):
        for occluder in inst.occluded_by or ():
            if occluder in index:
                i, j = sorted((index[occluder], k))
                out[(i, j)] = 1 if i == index[occluder] else -1
    return out


def predicted_order(insts: list[Instance], i: int, j: int) -> int:
    """+1 when the prediction says i occludes j only, -1 the reverse, 0 for neither or both."""
    i_over_j = insts[i].id in (insts[j].occluded_by or ())
    j_over_i = insts[j].id in (insts[i].occluded_by or ())
    return int(i_over_j) - int(j_over_i)


def evaluate(pred: Dataset, gt: Dataset, gt_order: str = "masks", samples: bool = False) -> dict:
    """Ordering accuracy and amodal IoU metrics of ``pred`` against ``gt`` (one dict, JSON-ready);
    ``samples`` adds the (confidence, right) and (amodal_confidence, IoU) pairs behind the
    reliability tables, for pooling several files."""
    check_matching(pred, gt)
    if gt_order not in ("masks", "annotated"):
        raise ValueError(f"gt_order must be 'masks' or 'annotated', got {gt_order!r}")
    if gt_order == "annotated" and all(i.occluded_by is None for i in gt.instances):
        raise InputError(gt.path, "has no annotated order (no occluded_by / depth_constraint); use --gt-order masks")
    pred_by_id = {i.id: i for i in pred.instances}
    edge_confidence = {
        (p["occluder_id"], p["occludee_id"]): p["confidence"]
        for p in pred.extra.get("occlusion_pairs", [])
        if p.get("confidence") is not None
    }
    judged: list[tuple[float, bool]] = []  # (confidence, direction right) of predicted GT-occluded pairs
    estimated: list[tuple[float, float]] = []  # (amodal_confidence, true IoU)
    occ_pairs = occ_correct = all_pairs = all_correct = 0
    total, occluded = _Tally(), _Tally()
    bins = [_Tally() for _ in OCCLUSION_BINS]
    hidden = [_Tally() for _ in HIDDEN_BUCKETS]
    target = 0
    for image in gt.images:
        g = [i for i in gt.by_image[image.id] if not i.iscrowd]
        p = [pred_by_id[i.id] for i in g]
        truth = gt_order_from_masks(g) if gt_order == "masks" else gt_order_annotated(g)
        n = len(g)
        all_pairs += n * (n - 1) // 2
        for i in range(n):
            for j in range(i + 1, n):
                expected = truth.get((i, j), 0)
                got = predicted_order(p, i, j)
                all_correct += got == expected
                if expected:
                    occ_pairs += 1
                    occ_correct += got == expected
                    front, back = (p[i].id, p[j].id) if got == 1 else (p[j].id, p[i].id)
                    if got and (front, back) in edge_confidence:
                        judged.append((edge_confidence[(front, back)], got == expected))
        for gi, pi in zip(g, p):
            g_area, p_area = rle_area(gi.amodal), rle_area(pi.amodal)
            inter = rle_intersection_area(gi.amodal, pi.amodal)
            union = g_area + p_area - inter
            target += g_area
            rate = 1 - rle_intersection_area(gi.modal, gi.amodal) / g_area if g_area else 0.0
            areas = (inter, union, g_area, p_area)
            total.add(*areas)
            if pi.source.get("amodal_confidence") is not None:
                estimated.append((pi.source["amodal_confidence"], inter / union if union else 1.0))
            if rate > 0:
                occluded.add(*areas)
                hidden[int(np.searchsorted(HIDDEN_BUCKETS, rate, side="left"))].add(*areas)
            bins[int(np.searchsorted(OCCLUSION_BINS, rate, side="left"))].add(*areas)
    metrics = {
        "order_acc": occ_correct / occ_pairs if occ_pairs else None,
        "order_pairs": occ_pairs,
        "order_correct": occ_correct,
        "allpair_acc": all_correct / all_pairs if all_pairs else None,
        "pooled_iou": total.pooled,
        "sum_intersection": total.inter,
        "sum_union": total.union,
        "pacc": total.inter / target if target else None,
        "miou": total.mean,
        "miou_occluded": occluded.mean,
        "instances": len(total.ious),
        "occluded_instances": len(occluded.ious),
        "images": len(gt.images),
        "by_occlusion": [t.row(_bin_label(k)) for k, t in enumerate(bins)],
        "by_hidden_share": [t.row(label) for t, label in zip(hidden, ("< 25%", "25-50%", "> 50%"))],
        "gt_order": gt_order,
        "edge_confidence": edge_reliability(judged) if judged else None,
        "amodal_confidence": iou_reliability(estimated) if estimated else None,
    }
    if samples:
        metrics["samples"] = {"edges": judged, "amodal": estimated}
    return metrics


def _bin_index(predicted: np.ndarray, low: float) -> tuple[np.ndarray, np.ndarray]:
    """Bin edges of RELIABILITY_BINS equal bins of [low, 1] and each prediction's bin index."""
    edges = np.linspace(low, 1.0, RELIABILITY_BINS + 1)
    return edges, np.clip(np.searchsorted(edges, predicted, side="right") - 1, 0, RELIABILITY_BINS - 1)


def _ece(predicted: np.ndarray, observed: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Expected calibration error of ``observed`` outcomes ``[..., N]`` (one row per draw) against
    ``predicted[N]`` binned by ``index[N]``: bin-weighted mean |observed - predicted|."""
    onehot = np.eye(RELIABILITY_BINS)[index]
    count = onehot.sum(axis=0)
    used = count > 0
    gap = np.abs(observed @ onehot[:, used] - predicted @ onehot[:, used]) / count[used]
    return gap @ count[used] / len(predicted)


def reliability(predicted: np.ndarray, observed: np.ndarray, low: float) -> dict:
    """Reliability table of ``predicted`` probabilities (or IoUs) against ``observed`` outcomes over
    RELIABILITY_BINS equal bins of [low, 1], and the expected calibration error (bin-weighted
    mean |observed - predicted|)."""
    edges, index = _bin_index(predicted, low)
    table = []
    for b in range(RELIABILITY_BINS):
        inside = index == b
        if not inside.any():
            continue
        table.append(
            {
                "bin": f"[{edges[b]:.2f}, {edges[b + 1]:.2f}{']' if b == RELIABILITY_BINS - 1 else ')'}",
                "count": int(inside.sum()),
                "predicted": round(float(predicted[inside].mean()), 4),
                "observed": round(float(observed[inside].mean()), 4),
            }
        )
    ece = float(_ece(predicted, observed, index))
    return {"count": len(predicted), "ece": round(ece, 4), "table": table}


def if_calibrated(confidence: np.ndarray, lowest: np.ndarray) -> dict:
    """What these confidences would score were they exactly right: outcomes drawn again and again
    (seeded) as Bernoulli(confidence); the median and 90th percentile of the ECE, and the median
    share of the wrong edges that the ``lowest`` (indices) hold. A measured ECE inside that range is
    what sampling alone gives on so few edges; the share says how sharp the confidences are."""
    rng = np.random.default_rng(0)
    draws = min(CALIBRATED_DRAWS, max(MIN_DRAWS, DRAW_BUDGET // len(confidence)))
    index = _bin_index(confidence, EDGE_LOW)[1]
    ece, share = [], []
    step = max(1, DRAW_ELEMENTS // len(confidence))  # draws at a time: memory stays flat
    for start in range(0, draws, step):
        right = (rng.random((min(step, draws - start), len(confidence))) < confidence).astype(np.float64)
        ece.append(_ece(confidence, right, index))
        wrong = (1 - right).sum(axis=1)
        share.append((1 - right[:, lowest]).sum(axis=1)[wrong > 0] / wrong[wrong > 0])
    ece, share = np.concatenate(ece), np.concatenate(share)
    return {
        "ece_median": round(float(np.median(ece)), 4),
        "ece_p90": round(float(np.quantile(ece, 0.9)), 4),
        "wrong_share_in_least_confident": round(float(np.median(share)), 4) if len(share) else None,
    }


def edge_reliability(judged: list[tuple[float, bool]]) -> dict:
    """How well edge confidences predict a right direction, how many of the wrong directions the
    least-confident edges hold (the share ``convert --review`` lists), and both as they would be
    were the confidences exactly calibrated (``if_calibrated``)."""
    confidence = np.array([c for c, _ in judged], dtype=np.float64)
    right = np.array([r for _, r in judged], dtype=np.float64)
    out = reliability(confidence, right, EDGE_LOW)
    lowest = np.argsort(confidence, kind="stable")[: least_confident(len(judged))]
    wrong = int((right == 0).sum())
    out.update(wrong=wrong, wrong_in_least_confident=int((right[lowest] == 0).sum()), least_confident=len(lowest))
    out["if_calibrated"] = if_calibrated(confidence, lowest)
    return out


def iou_reliability(estimated: list[tuple[float, float]]) -> dict:
    """How well amodal_confidence estimates the true IoU (reliability table and mean absolute error)."""
    predicted = np.array([p for p, _ in estimated], dtype=np.float64)
    observed = np.array([o for _, o in estimated], dtype=np.float64)
    out = reliability(predicted, observed, 0.0)
    out["mean_abs_error"] = round(float(np.mean(np.abs(predicted - observed))), 4)
    return out


def _bin_label(k: int) -> str:
    if k == 0:
        return "0%"
    lo, hi = OCCLUSION_BINS[k - 1], OCCLUSION_BINS[k]
    return f"({lo:.0%}, {hi:.0%}]"
