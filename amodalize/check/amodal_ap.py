"""Scores of amodal instance detections against ground-truth amodal masks, where label sources differ.

Beside COCO mask and box AP over all objects: the same over the occluded objects alone (the others
ignored, as crowd regions are), the mean IoU of each occluded object with the detection matched
to it, and the mean IoU of masks predicted on the ground-truth boxes (mask quality apart from
detection). Label sources differ only on occluded objects, so AP over all of them dilutes it.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
from pycocotools import mask as mask_utils

from amodalize.data.masks import rle_area, rle_bbox, rle_intersection_area, rle_iou
from amodalize.data.records import Dataset
from amodalize.errors import InputError

# The box IoU at which a detection matches an object (COCO's loosest threshold, AP50's), whatever
# its score: a fixed score cut-off made the occluded objects' mean IoU swing with how confident
# each training seed happened to be (docs/measurements.md).
MATCH_IOU = 0.5


def occluded_ids(gt: Dataset) -> set[int]:
    """Ids of the non-crowd ground-truth objects whose visible mask hides part of their amodal one."""
    return {
        inst.id
        for inst in gt.instances
        if not inst.iscrowd
        and rle_area(inst.amodal) > 0
        and rle_intersection_area(inst.modal, inst.amodal) < rle_area(inst.amodal)
    }


def coco_ap(gt: Dataset, detections: list[dict], ignore: set[int] = frozenset()) -> dict:
    """Mask AP / AP50 / AP75 and box AP of ``detections`` against the amodal masks and boxes of
    ``gt``; objects in ``ignore`` count as crowd regions (a detection on them is neither right nor wrong)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not gt.has_amodal:
        raise InputError(gt.path, "has no amodal masks to evaluate against")
    anns = []
    for inst in gt.instances:
        if rle_area(inst.amodal) == 0:
            continue
        anns.append(
            {
                "id": inst.id,
                "image_id": inst.image_id,
                "category_id": inst.category_id,
                "segmentation": inst.amodal,
                "area": rle_area(inst.amodal),
                "bbox": rle_bbox(inst.amodal),
                "iscrowd": int(inst.iscrowd or inst.id in ignore),
            }
        )
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
    coco_gt.dataset = {
        "images": [{"id": im.id, "width": im.width, "height": im.height} for im in gt.images],
        "annotations": anns,
        "categories": gt.categories,
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt.createIndex()
    metrics = {"AP": 0.0, "AP50": 0.0, "AP75": 0.0, "box_AP": 0.0, "detections": len(detections)}
    if not detections:
        return metrics
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes([dict(d) for d in detections])  # loadRes writes into what it is given
    for iou_type, keys in (("segm", ("AP", "AP50", "AP75")), ("bbox", ("box_AP",))):
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        with contextlib.redirect_stdout(io.StringIO()):  # stdout is reserved for --json
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        for n, key in enumerate(keys):
            metrics[key] = max(0.0, float(ev.stats[n]))  # COCOeval reports -1 for "no GT"
    return metrics


def matched_detections(gt: Dataset, detections: list[dict]) -> dict[int, dict]:
    """Each matched ground-truth object's detection (by annotation id), matched as COCO's evaluation
    does: in order of score, a detection takes the unmatched non-crowd object of its image and
    category whose amodal box overlaps its mask's box most, if that box IoU is at least MATCH_IOU."""
    by_group: dict[tuple[int, int], list[dict]] = {}
    for det in sorted(detections, key=lambda d: -d["score"]):
        by_group.setdefault((det["image_id"], det["category_id"]), []).append(det)
    objects: dict[tuple[int, int], list] = {}
    for inst in gt.instances:
        if not inst.iscrowd and rle_area(inst.amodal):
            objects.setdefault((inst.image_id, inst.category_id), []).append(inst)
    matched = {}
    for group, dets in by_group.items():
        insts = objects.get(group, [])
        if not insts:
            continue
        boxes = [rle_bbox(d["segmentation"]) for d in dets]
        ious = np.asarray(mask_utils.iou(boxes, [rle_bbox(i.amodal) for i in insts], [0] * len(insts)))
        free = np.ones(len(insts), dtype=bool)
        for k, det in enumerate(dets):
            overlap = np.where(free, ious[k], -1.0)
            j = int(np.argmax(overlap))
            if overlap[j] >= MATCH_IOU:
                matched[insts[j].id] = det
                free[j] = False
    return matched


def occluded_miou(gt: Dataset, detections: list[dict], occluded: set[int]) -> float | None:
    """Mean over the ``occluded`` ground-truth objects of the IoU of their amodal mask with their
    matched detection's mask (``matched_detections``; 0 when none is matched)."""
    matched = matched_detections(gt, detections)
    ious = [
        rle_iou(matched[inst.id]["segmentation"], inst.amodal) if inst.id in matched else 0.0
        for inst in gt.instances
        if inst.id in occluded
    ]
    return float(np.mean(ious)) if ious else None


def given_box_miou(gt: Dataset, masks: dict[int, dict], occluded: set[int]) -> float | None:
    """Mean IoU with the truth of the masks predicted on the ground-truth boxes of the ``occluded``
    objects (``masks``: RLE by annotation id)."""
    ious = [rle_iou(masks[inst.id], inst.amodal) for inst in gt.instances if inst.id in occluded and inst.id in masks]
    return float(np.mean(ious)) if ious else None


def score(gt: Dataset, detections: list[dict], boxed: dict[int, dict] | None = None) -> dict:
    """Every score: COCO AP over all objects, AP over the occluded ones (``occluded_``), the mean
    IoU of the occluded objects with their detections, and with ``boxed`` (masks predicted on the
    ground-truth boxes) the mean IoU of those on the occluded objects."""
    occluded = occluded_ids(gt)
    everyone = {inst.id for inst in gt.instances}
    only = coco_ap(gt, detections, ignore=everyone - occluded)
    out = coco_ap(gt, detections)
    out.update({f"occluded_{k}": only[k] for k in ("AP", "AP50", "AP75", "box_AP")})
    out["occluded_objects"] = len(occluded)
    out["occluded_miou"] = occluded_miou(gt, detections, occluded)
    if boxed is not None:
        out["occluded_boxed_miou"] = given_box_miou(gt, boxed, occluded)
    return out
