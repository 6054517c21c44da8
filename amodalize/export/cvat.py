"""A COCO 1.0 file as CVAT (through datumaro) imports it: ``annotations/instances_default.json``,
the amodal outlines as polygons whose ``attributes`` carry what a fixer needs to see (the
occluders, ``amodal_confidence``, the hidden share), and each visible outline as an annotation of
its own under a '<category> (visible)' label. CVAT renumbers annotations on import, so every
outline carries its object's COCO id as the attribute ``object`` (with ``outline`` 'amodal' or
'visible'), and ``occluded_by`` lists the ``object`` ids of the occluders.

``read_back`` reads CVAT's COCO 1.0 export of those files (the zip, its folder or the JSON) with
the converted file they were made from: CVAT renumbers images too, so images are matched by
file_name, objects by their ``object`` attribute, and the order is read from ``occluded_by``.

Written here: datumaro, which CVAT's COCO import runs on, pins older OpenCV and Pillow than
amodalize's, so it cannot be a dependency; the file is plain COCO with one ``attributes`` object
per annotation, the extension CVAT and datumaro read (tests/test_interop.py reads it back with
datumaro).
"""

from __future__ import annotations

import json
import zipfile
from collections import Counter
from pathlib import Path, PurePosixPath

from amodalize.data.formats.common import load_json
from amodalize.data.masks import rle_area, rle_bbox, to_rle
from amodalize.data.writer import write_json_atomic
from amodalize.errors import InputError
from amodalize.export.common import (
    DEFAULTS,
    ExportObject,
    ExportOptions,
    category_names,
    converted_images,
    read_converted,
)
from amodalize.export.restore import Returned, ReturnedImage, ReturnedObject

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


def read_back(path: Path, like: dict | None) -> Returned:
    """CVAT's COCO 1.0 export of our CVAT file as it came back; ``like`` is the converted file the
    export was made from (required: CVAT keeps neither image ids nor the fields it cannot show)."""
    if like is None:
        raise InputError(path, "a CVAT export comes back with --like CONVERTED (the file it was exported from)")
    doc = _cvat_document(path)
    images, categories = converted_images(like, path)
    by_name = {}
    for image in images:
        name = image.image.get("file_name") or ""
        by_name.setdefault(name, image)
        by_name.setdefault(PurePosixPath(name).name, image)
    names = category_names(categories, images)
    ids = {name: c for c, name in names.items()} | {name + VISIBLE: c for c, name in names.items()}
    cvat_names = {c.get("id"): c.get("name") for c in doc.get("categories") or []}
    problems: Counter = Counter()
    local = {}
    for entry in doc.get("images") or []:
        name = entry.get("file_name") or ""
        image = by_name.get(name) or by_name.get(PurePosixPath(name).name)
        if image is None:
            problems["images of no image of the converted file (file_name not found)"] += 1
        else:
            local[entry.get("id")] = image
    outlines: dict[int, dict[int, dict]] = {image.image["id"]: {} for image in local.values()}
    fronts: dict[int, dict[int, list[int]]] = {image.image["id"]: {} for image in local.values()}
    for ann in doc.get("annotations") or []:
        image = local.get(ann.get("image_id"))
        if image is None:
            continue
        attributes = ann.get("attributes") or {}
        exported = {obj.annotation["id"] for obj in image.objects}
        object_id = _integer(attributes.get("object"))
        outline = attributes.get("outline")
        if object_id not in exported or outline not in ("amodal", "visible"):
            problems["outlines that belong to no exported object (drawn anew?)"] += 1
            continue
        got = outlines[image.image["id"]].setdefault(object_id, {})
        got[outline] = ann.get("segmentation") or []
        if outline == "amodal":
            got["category"] = ids.get(cvat_names.get(ann.get("category_id")))
            occluders = [_integer(v) for v in str(attributes.get("occluded_by") or "").replace(",", " ").split()]
            if any(v not in exported for v in occluders):
                problems["occluded_by ids of no object of the image (left out)"] += 1
            fronts[image.image["id"]][object_id] = [v for v in occluders if v in exported and v != object_id]
    returned = []
    for image in local.values():
        got = outlines[image.image["id"]]
        objects = {k: ReturnedObject(v.get("amodal"), v.get("visible"), v.get("category")) for k, v in got.items()}
        edges = {(front, k) for k, ids_ in fronts[image.image["id"]].items() for front in ids_ if front in objects}
        returned.append(ReturnedImage(image.image["id"], objects, edges, by_person=True))
    return Returned(like, returned, _as_written, problems)


def _cvat_document(path: Path) -> dict:
    """The COCO document of a CVAT export: the zip CVAT gives, its unzipped folder, or the JSON."""
    if path.is_dir():
        return load_json(path / ANNOTATIONS)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            inside = [n for n in archive.namelist() if n.endswith(".json") and "annotations/" in n]
            if not inside:
                raise InputError(path, f"holds no annotations/*.json (a CVAT COCO 1.0 export has {ANNOTATIONS})")
            try:
                return json.loads(archive.read(inside[0]))
            except ValueError as e:
                raise InputError(path, f"{inside[0]} is not valid JSON ({e})") from None
    return load_json(path)


def _integer(value: object) -> int | None:
    """An attribute's value as an id (CVAT may give numbers back as text)."""
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def _as_written(obj: ExportObject, image: dict) -> tuple[list, list]:
    """An object's outlines as the CVAT file holds them (pixels, as written)."""
    return obj.amodal, obj.visible
