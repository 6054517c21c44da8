"""COCOA (Zhu et al. 2017): amodal polygons per region, visible masks only on occluded regions.

Two layouts: the full ``COCO_amodal_*2014.json`` (``images`` + ``annotations`` whose entries hold
``regions``) and the per-image file of the reference demo (``regions`` at the top level). Regions
have no ids: they get 1..N in file order (image order, then region order), the same on every read.
"""

from __future__ import annotations

from pathlib import Path

import cv2

from amodalize.data.formats.coco import DEFAULT_CATEGORIES
from amodalize.data.formats.common import check_unique_ids, image_of, make_instance, read_images, require
from amodalize.data.records import Dataset, ImageRecord, Instance
from amodalize.errors import InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def detect(doc: object) -> int:
    """2 when the file holds COCOA regions, else 0."""
    if not isinstance(doc, dict):
        return 0
    if isinstance(doc.get("regions"), list):
        return 2
    anns = doc.get("annotations")
    if isinstance(anns, list) and any(isinstance(a, dict) and "regions" in a for a in anns):
        return 2
    return 0


def read(doc: dict, path: Path) -> Dataset:
    """Read either COCOA layout; every region becomes one instance of category 1."""
    if "regions" in doc:
        image = _per_image_record(doc, path)
        entries, records = [(doc, image)], [image]
        extra = {}
    else:
        records = read_images(doc, path)
        images = {r.id: r for r in records}
        entries = []
        for k, entry in enumerate(require(doc, "annotations", list, path, "the top level")):
            image_id = require(entry, "image_id", int, path, f"annotations[{k}]")
            entries.append((entry, image_of(images, image_id, f"entry {k}", path)))
        extra = {k: v for k, v in doc.items() if k not in ("images", "annotations")}
    instances: list[Instance] = []
    for entry, image in entries:
        instances.extend(_regions(entry, image, path, first_id=len(instances) + 1))
        if entry is not doc:
            image.source.setdefault("cocoa", {k: v for k, v in entry.items() if k != "regions"})
    check_unique_ids(instances, path)
    return Dataset(path, "cocoa", records, instances, DEFAULT_CATEGORIES, extra)


def _regions(entry: dict, image: ImageRecord, path: Path, first_id: int) -> list[Instance]:
    regions = require(entry, "regions", list, path, f"image {image.id}")
    ids = {k + 1: first_id + k for k in range(len(regions))}  # 1-based region index -> id
    occluders = _depth_constraints(entry.get("depth_constraint"), ids)
    out = []
    for k, region in enumerate(regions):
        ann_id = first_id + k
        amodal = require(region, "segmentation", list, path, f"image {image.id} region {k + 1}")
        source = {"id": ann_id, "image_id": image.id, "category_id": 1, "iscrowd": 0, **region}
        out.append(
            make_instance(
                path,
                source,
                image,
                ann_id=ann_id,
                modal=region.get("visible_mask", amodal),
                amodal=amodal,
                occluded_by=tuple(sorted(occluders.get(ann_id, ()))) if occluders is not None else None,
            )
        )
    return out


def _depth_constraints(text: object, ids: dict[int, int]) -> dict[int, set[int]] | None:
    """COCOA ``depth_constraint`` "i-j,..." (region i occludes region j) as occludee -> occluders."""
    if not isinstance(text, str):
        return None
    occluders: dict[int, set[int]] = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        i, j = (int(v) for v in item.split("-"))
        if i in ids and j in ids:
            occluders.setdefault(ids[j], set()).add(ids[i])
    return occluders


def _per_image_record(doc: dict, path: Path) -> ImageRecord:
    """The per-image layout has no image size: take it from an RLE, else from the image beside."""
    image_id = require(doc, "image_id", int, path, "the top level")
    source = {k: v for k, v in doc.items() if k != "regions"}
    file_name = next((path.stem + s for s in IMAGE_SUFFIXES if path.with_suffix(s).exists()), None)
    size = next((r["visible_mask"]["size"] for r in doc["regions"] if isinstance(r.get("visible_mask"), dict)), None)
    if size is None and file_name is not None:
        pixels = cv2.imread(str(path.with_name(file_name)), cv2.IMREAD_UNCHANGED)
        size = None if pixels is None else pixels.shape[:2]
    if size is None:
        raise InputError(path, "cannot tell the image size: no region has an RLE and no image file lies beside")
    height, width = int(size[0]), int(size[1])
    image = {"id": image_id, "width": width, "height": height, "file_name": file_name, "cocoa": source}
    return ImageRecord(image_id, width, height, file_name, image)
