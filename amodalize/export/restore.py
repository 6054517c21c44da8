"""Labels that come back from an annotation tool, made an augmented COCO file again.

A tool's reader (``labelstudio.read_back``, ``cvat.read_back``) gives the converted document the
export was made from and, for each image that came back, each object's outlines and the order
edges as a person left them. ``restore`` keeps every annotation nobody touched exactly as it was
(masks, confidences, every other field), rebuilds the masks of edited objects from their outlines
and marks them ``checked`` (amodal_confidence 1.0), and orders each image by the returned edges:
an edge kept as it was keeps its score and confidence, an added or reversed one is ``checked``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from amodalize.data.masks import rle_area, rle_bbox, rle_merge, rle_minus, to_rle
from amodalize.export.common import ExportObject, converted_images

# An outline as a tool returns it: COCO polygons in image pixels (or an RLE, for a mask drawn).
Polygons = list[list[float]] | dict


@dataclass
class ReturnedObject:
    """One object as a tool returned it: its amodal and visible outlines (COCO polygons in image
    pixels; None where every region of that outline was deleted) and its label's category id
    (None where the tool keeps no label)."""

    amodal: Polygons | None
    visible: Polygons | None
    category_id: int | None = None


@dataclass
class ReturnedImage:
    """One image as it came back: its objects by annotation id, its order edges as (front id,
    back id), and whether a person submitted it (else it holds the predictions as exported)."""

    image_id: int
    objects: dict[int, ReturnedObject]
    edges: set[tuple[int, int]]
    by_person: bool = False


@dataclass
class Returned:
    """What a tool's export holds: ``base`` the converted document the export was made from,
    ``images`` those that came back, ``problems`` what the file cannot hold (kind -> count, e.g. a
    region that belongs to no object), and ``written(obj, image)`` an object's amodal and visible
    outlines as the export wrote them, in the pixels the reader gives back (to tell edits apart)."""

    base: dict
    images: list[ReturnedImage]
    written: Callable[[ExportObject, dict], tuple[Polygons, Polygons]]
    problems: Counter = field(default_factory=Counter)


def same_outline(a: Polygons | None, b: Polygons, height: int, width: int) -> bool:
    """True when outlines ``a`` and ``b`` cover the same pixels (None: no region came back, the same
    only where none was written: a fully hidden object has no visible outline)."""
    if a is None:
        return not b
    return _rle(a, height, width)["counts"] == _rle(b, height, width)["counts"]


def _rle(outline: Polygons, height: int, width: int) -> dict:
    """The mask of an outline; polygons of under three points (a tool's stray clicks) cover nothing."""
    if isinstance(outline, list):
        outline = [p for p in outline if len(p) >= 6]
    return to_rle(outline, height, width)


def edited(ann: dict, back: ReturnedObject, height: int, width: int) -> dict:
    """``ann`` with its masks rebuilt from the returned outlines: a deleted amodal outline leaves
    the visible mask as the whole object, a deleted visible one the old visible mask inside the new
    amodal one; the visible mask always lies inside the amodal one."""
    old_visible = to_rle(ann["visible_mask"], height, width)
    visible = _rle(back.visible, height, width) if back.visible is not None else None
    amodal = _rle(back.amodal, height, width) if back.amodal is not None else None
    if amodal is None:
        amodal = visible if visible is not None else old_visible
    if visible is None:
        visible = rle_merge([old_visible, amodal], intersect=True)
    amodal = rle_merge([amodal, visible])
    invisible = rle_minus(amodal, visible)
    area = rle_area(amodal)
    out = {key: value for key, value in ann.items() if key not in ("drawn_segmentation", "completed_mask")}
    if "drawn_segmentation" in ann:  # what the input drew is kept, not what was completed from it
        out["drawn_segmentation"] = ann["drawn_segmentation"]
    out.update(
        segmentation=amodal,
        bbox=rle_bbox(amodal),
        area=area,
        visible_mask=visible,
        visible_bbox=rle_bbox(visible),
        visible_area=rle_area(visible),
        invisible_mask=invisible,
        occlude_rate=rle_area(invisible) / area if area else 0.0,
        amodal_confidence=1.0,
        checked=True,
    )
    if back.category_id is not None:
        out["category_id"] = back.category_id
    return out


def restore(returned: Returned, path: Path) -> tuple[dict, dict]:
    """The augmented document the returned labels make (``path`` names the export in errors), and
    counts of what changed: objects edited and deleted, edges kept, added, reversed and removed,
    images that did not come back, and ``problems``."""
    images, _ = converted_images(returned.base, path)
    back_by_id = {image.image_id: image for image in returned.images}
    counts = Counter()
    now: dict[int, dict | None] = {}  # id() of a base annotation -> what it became (None: deleted)
    dropped: set[int] = set()  # id() of the base's pairs no longer in the order
    added = []
    for image in images:
        back = back_by_id.get(image.image.get("id"))
        if back is None:
            counts["images_not_returned"] += 1
            continue
        counts["images"] += 1
        counts["images_by_person"] += back.by_person
        height, width = image.image["height"], image.image["width"]
        objects = {obj.annotation["id"]: obj for obj in image.objects}
        alive = set()
        for ann in image.annotations:
            obj = objects.get(ann["id"])
            if obj is None:  # crowd regions, box-only annotations: never exported, kept as they are
                continue
            got = back.objects.get(ann["id"])
            if got is None:
                now[id(ann)] = None
                counts["objects_deleted"] += 1
                continue
            alive.add(ann["id"])
            amodal, visible = returned.written(obj, image.image)
            same = same_outline(got.amodal, amodal, height, width) and same_outline(got.visible, visible, height, width)
            if not same or got.category_id not in (None, ann.get("category_id")):
                now[id(ann)] = edited(ann, got, height, width)
                counts["objects_edited"] += 1
        before = {(p["occluder_id"], p["occludee_id"]): p for p in image.edges}
        after = {(front, behind) for front, behind in back.edges if front in alive and behind in alive}
        counts["edges_dropped_with_objects"] += len(back.edges) - len(after)
        for edge, pair in before.items():
            if edge in after:
                counts["edges_kept"] += 1
                continue
            dropped.add(id(pair))
            if edge[::-1] in after:
                counts["edges_reversed"] += 1
            elif edge[0] in alive and edge[1] in alive:
                counts["edges_removed"] += 1
        for front, behind in sorted(after - set(before)):
            added.append(
                {
                    "image_id": image.image["id"],
                    "occluder_id": front,
                    "occludee_id": behind,
                    "score": 1.0,
                    "confidence": 1.0,
                    "checked": True,
                }
            )
            counts["edges_added"] += (behind, front) not in before
        fronts: dict[int, list[int]] = {i: [] for i in alive}
        for front, behind in after:
            fronts[behind].append(front)
        for ann in image.annotations:
            current = now.get(id(ann), ann)
            if ann["id"] in alive and sorted(fronts[ann["id"]]) != current.get("occluded_by"):
                now[id(ann)] = {**current, "occluded_by": sorted(fronts[ann["id"]])}
    annotations = [now.get(id(ann), ann) for ann in returned.base.get("annotations", [])]
    annotations = [ann for ann in annotations if ann is not None]
    pairs = [p for p in returned.base.get("occlusion_pairs", []) if id(p) not in dropped] + added
    counts = {**counts, "problems": dict(returned.problems)}
    info = dict(returned.base.get("info") or {})
    info["amodalize"] = {**info.get("amodalize", {}), "imported": {"from": str(path), **counts}}
    return {**returned.base, "info": info, "annotations": annotations, "occlusion_pairs": pairs}, counts
