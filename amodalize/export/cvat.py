"""A COCO 1.0 file as CVAT (through datumaro) imports it: ``annotations/instances_default.json``,
the amodal outlines as polygons whose ``attributes`` carry what a fixer needs to see (the
occluders, ``amodal_confidence``, the hidden share), and each visible outline as an annotation of
its own under a '<category> (visible)' label. CVAT renumbers annotations on import, so every
outline carries its object's COCO id as the attribute ``object`` (with ``outline`` 'amodal' or
'visible'), and ``occluded_by`` lists the ``object`` ids of the occluders.

Written here: datumaro, which CVAT's COCO import runs on, pins older OpenCV and Pillow than
amodalize's, so it cannot be a dependency; the file is plain COCO with one ``attributes`` object
per annotation, the extension CVAT and datumaro read (tests/test_interop.py reads it back with
datumaro).
"""

from __future__ import annotations

from pathlib import Path

from amodalize.data.masks import rle_area, rle_bbox, to_rle
from amodalize.data.writer import write_json_atomic
from amodalize.export.common import DEFAULTS, ExportOptions, category_names, read_converted

ANNOTATIONS = Path("annotations") / "instances_default.json"
VISIBLE = " (visible)"


def export(converted: Path, out_dir: Path, options: ExportOptions = DEFAULTS) -> dict:
    """Write ``out_dir/annotations/instances_default.json`` (zip ``out_dir`` to import it into CVAT
    as 'COCO 1.0'); visible outlines get ids after the file's largest. Returns counts."""
    images, categories = read_converted(converted)
    names = category_names(categories, images)
    visible_id = {c: max(names) + 1 + k for k, c in enumerate(names)}
    cats = [{"id": c, "name": n, "supercategory": ""} for c, n in names.items()]
    cats += [{"id": visible_id[c], "name": n + VISIBLE, "supercategory": ""} for c, n in names.items()]
    next_id = 1 + max((obj.annotation["id"] for image in images for obj in image.objects), default=0)
    annotations = []
    for image in images:
        h, w = image.image["height"], image.image["width"]
        for obj in image.objects:
            ann, category = obj.annotation, obj.annotation.get("category_id", 1)
            attributes = {
                "object": ann["id"],
                "outline": "amodal",
                "occluded_by": " ".join(map(str, obj.occluded_by)),
                "occlude_rate": round(float(ann.get("occlude_rate", 0.0)), 4),
                "occluded": bool(obj.occluded_by),
            }
            if obj.confidence is not None:
                attributes["amodal_confidence"] = obj.confidence
            annotations.append(_polygon_ann(ann["id"], image.image["id"], category, obj.amodal, h, w, attributes))
            attributes = {"object": ann["id"], "outline": "visible", "occluded": bool(obj.occluded_by)}
            annotations.append(
                _polygon_ann(next_id, image.image["id"], visible_id[category], obj.visible, h, w, attributes)
            )
            next_id += 1
    doc = {
        "info": {"description": f"amodalize export of {converted.name}"},
        "licenses": [],
        "images": [{**image.image} for image in images],
        "annotations": annotations,
        "categories": cats,
    }
    write_json_atomic(out_dir / ANNOTATIONS, doc)
    objects = sum(len(image.objects) for image in images)
    return {
        "images": len(images),
        "objects": objects,
        "annotations": len(annotations),
        "files": [str(out_dir / ANNOTATIONS)],
    }


def summary(done: dict) -> str:
    """One line on what ``export`` wrote."""
    return f"{done['objects']} objects as {done['annotations']} polygon annotations in {done['images']} images"


def _polygon_ann(
    ann_id: int, image_id: int, category: int, polygons: list, height: int, width: int, attributes: dict
) -> dict:
    """A COCO polygon annotation with its box and area from the rasterised polygons."""
    rle = to_rle(polygons, height, width) if polygons else None
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category,
        "iscrowd": 0,
        "segmentation": polygons,
        "bbox": rle_bbox(rle) if rle else [0, 0, 0, 0],
        "area": rle_area(rle) if rle else 0,
        "attributes": attributes,
    }
