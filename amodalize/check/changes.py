"""What people changed in a converted file (fixed in an annotation tool and imported back), and
whether the confidences pointed at it: the changes that fell in the least-sure share ``review``
lists, against that share's size."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from amodalize.check.evaluate import evaluate
from amodalize.check.review import REVIEW_SHARE, review
from amodalize.data.formats import parse_dataset
from amodalize.data.formats.common import load_json
from amodalize.data.masks import rle_iou, to_rle


def _edges(doc: dict) -> set[tuple[int, int, int]]:
    return {(p["image_id"], p["occluder_id"], p["occludee_id"]) for p in doc.get("occlusion_pairs", [])}


def _objects(doc: dict) -> dict[int, dict]:
    """The converted (completed) annotations of ``doc`` by id."""
    return {a["id"]: a for a in doc.get("annotations", []) if "visible_mask" in a and not a.get("iscrowd")}


def changes(converted: dict, fixed: dict, share: float = REVIEW_SHARE) -> dict:
    """Edges kept, reversed, removed and added, objects deleted and edited (amodal and visible IoU
    of each edited one with its converted mask), and how many of the changed edges and objects were
    among the least-confident ``share`` that ``review`` lists for ``converted``."""
    before, after = _edges(converted), _edges(fixed)
    reversed_ = {e for e in before if (e[0], e[2], e[1]) in after}
    removed = before - after - reversed_
    added = {e for e in after - before if (e[0], e[2], e[1]) not in before}
    sizes = {im["id"]: (im["height"], im["width"]) for im in converted.get("images", [])}
    old, new = _objects(converted), _objects(fixed)
    edited = []
    for ann_id, ann in old.items():
        now = new.get(ann_id)
        if now is None or now is ann or now == ann:
            continue
        h, w = sizes[ann["image_id"]]
        amodal = rle_iou(to_rle(ann["segmentation"], h, w), to_rle(now["segmentation"], h, w))
        visible = rle_iou(to_rle(ann["visible_mask"], h, w), to_rle(now["visible_mask"], h, w))
        if amodal < 1.0 or visible < 1.0 or now.get("category_id") != ann.get("category_id"):
            edited.append(
                {
                    "image_id": ann["image_id"],
                    "id": ann_id,
                    "amodal_iou": round(amodal, 4),
                    "visible_iou": round(visible, 4),
                    "category_changed": now.get("category_id") != ann.get("category_id"),
                }
            )
    deleted = sorted(set(old) - set(new))
    listed = review(converted, share)
    listed_edges = {(e["image_id"], e["occluder_id"], e["occludee_id"]) for e in listed["edges"]}
    listed_objects = {i["id"] for i in listed["instances"]}
    changed_edges = reversed_ | removed
    changed_objects = {e["id"] for e in edited} | set(deleted)
    return {
        "edges": {
            "converted": len(before),
            "fixed": len(after),
            "kept": len(before & after),
            "reversed": len(reversed_),
            "removed": len(removed),
            "added": len(added),
        },
        "objects": {
            "converted": len(old),
            "edited": len(edited),
            "deleted": len(deleted),
            "mean_amodal_iou_of_edited": round(sum(e["amodal_iou"] for e in edited) / len(edited), 4)
            if edited
            else None,
        },
        "least_sure": {
            "share": share,
            "edges_listed": len(listed_edges),
            "edges_listed_of_all": len(before),
            "changed_edges": len(changed_edges),
            "changed_edges_listed": len(changed_edges & listed_edges),
            "objects_listed": len(listed_objects),
            "objects_listed_of_all": sum(
                1 for a in old.values() if a.get("amodal_confidence") and a.get("occluded_by")
            ),
            "changed_objects": len(changed_objects),
            "changed_objects_listed": len(changed_objects & listed_objects),
        },
        "edited": edited,
        "deleted": deleted,
        "reversed": sorted(reversed_),
        "removed": sorted(removed),
        "added": sorted(added),
    }


def changes_line(done: dict) -> str:
    """One line on what people changed and how much of it the least-sure share held."""
    e, o, s = done["edges"], done["objects"], done["least_sure"]
    line = (
        f"changed: {e['reversed']} edges reversed, {e['removed']} removed, {e['added']} added (of {e['converted']}); "
        f"{o['edited']} objects edited, {o['deleted']} deleted (of {o['converted']})"
    )
    if s["changed_edges"] or s["changed_objects"]:
        line += (
            f"; in the least-sure {100 * s['share']:.0f}% that review lists: {s['changed_edges_listed']} of "
            f"{s['changed_edges']} changed edges, {s['changed_objects_listed']} of {s['changed_objects']} "
            "changed objects"
        )
    return line


def compare(converted: Path, fixed: Path, gt_order: str = "masks", fixed_format: str | None = None) -> dict:
    """``evaluate``'s metrics of ``converted`` against ``fixed`` (itself as people fixed it, read as
    ``fixed_format`` or its detected format; the objects they deleted left out of the score), with
    ``changes`` under ``"changes"``."""
    before, after = load_json(converted), load_json(fixed)
    pred, gt = parse_dataset(before, Path(converted), "coco_amodal"), parse_dataset(after, Path(fixed), fixed_format)
    kept = {i.id for i in gt.instances}
    metrics = evaluate(replace(pred, instances=[i for i in pred.instances if i.id in kept]), gt, gt_order)
    metrics["changes"] = changes(before, after)
    return metrics
