"""Scoring of predicted amodal masks and order against ground truth (reference protocol §6).

Ordering: the GT order of every touching pair comes from the masks (``occ_ij = |M_i ∩ G_j|``, ties
to the lower index), or from annotations with ``gt_order="annotated"``; accuracy counts GT-occluded
pairs whose predicted order matches (a missing or reversed prediction is wrong).
Amodal: pooled IoU ``Σ∩ / Σ∪`` over all instances (the paper's "mIoU"), mean per-instance IoU over
all and over occluded instances, and pooled/mean IoU by GT occlusion-rate bin.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from amodalize.data.masks import decode_crop, rle_area, rle_intersection_area
from amodalize.data.records import Dataset, Instance
from amodalize.errors import InputError
from amodalize.infer.pairs import touching_pairs

# Upper edges of the occlusion-rate bins (the first bin holds unoccluded instances only).
OCCLUSION_BINS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


@dataclass
class _Tally:
    inter: float = 0.0
    union: float = 0.0
    ious: list[float] = field(default_factory=list)

    def add(self, inter: int, union: int) -> None:
        self.inter += inter
        self.union += union
        self.ious.append(inter / union if union else 1.0)

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


def evaluate(pred: Dataset, gt: Dataset, gt_order: str = "masks") -> dict:
    """Ordering accuracy and amodal IoU metrics of ``pred`` against ``gt`` (one dict, JSON-ready)."""
    check_matching(pred, gt)
    if gt_order not in ("masks", "annotated"):
        raise ValueError(f"gt_order must be 'masks' or 'annotated', got {gt_order!r}")
    if gt_order == "annotated" and all(i.occluded_by is None for i in gt.instances):
        raise InputError(gt.path, "has no annotated order (no occluded_by / depth_constraint); use --gt-order masks")
    pred_by_id = {i.id: i for i in pred.instances}
    occ_pairs = occ_correct = all_pairs = all_correct = 0
    total, occluded = _Tally(), _Tally()
    bins = [_Tally() for _ in OCCLUSION_BINS]
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
        for gi, pi in zip(g, p):
            g_area, p_area = rle_area(gi.amodal), rle_area(pi.amodal)
            inter = rle_intersection_area(gi.amodal, pi.amodal)
            union = g_area + p_area - inter
            target += g_area
            rate = 1 - rle_intersection_area(gi.modal, gi.amodal) / g_area if g_area else 0.0
            total.add(inter, union)
            if rate > 0:
                occluded.add(inter, union)
            bins[int(np.searchsorted(OCCLUSION_BINS, rate, side="left"))].add(inter, union)
    return {
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
        "by_occlusion": [
            {
                "bin": _bin_label(k),
                "instances": len(t.ious),
                "pooled_iou": t.pooled,
                "miou": t.mean,
            }
            for k, t in enumerate(bins)
        ],
        "gt_order": gt_order,
    }


def _bin_label(k: int) -> str:
    if k == 0:
        return "0%"
    lo, hi = OCCLUSION_BINS[k - 1], OCCLUSION_BINS[k]
    return f"({lo:.0%}, {hi:.0%}]"
