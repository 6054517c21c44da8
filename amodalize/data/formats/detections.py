"""Predicted modal masks: a COCO detection-results list (``[{image_id, category_id, segmentation,
score}, ...]``) paired with the dataset file that holds its ``images``.

Detections at or above ``min_score`` become instances with ids 1..N in file order.
"""

from __future__ import annotations

from pathlib import Path

from amodalize.data.formats import read_dataset
from amodalize.data.formats.common import image_of, load_json, make_instance, require
from amodalize.data.records import Dataset
from amodalize.errors import InputError


def read_detections(path: Path, images_from: Path, min_score: float = 0.0) -> Dataset:
    """A Dataset of the detections in ``path`` on the images of ``images_from``."""
    dets = load_json(path)
    if not isinstance(dets, list):
        raise InputError(path, f"top level is a {type(dets).__name__}, expected a list of detections")
    base = read_dataset(images_from)
    images = {image.id: image for image in base.images}
    instances = []
    for k, det in enumerate(dets):
        where = f"detection {k}"
        score = require(det, "score", (int, float), path, where) if "score" in det else 1.0
        if score < min_score:
            continue
        image = image_of(images, require(det, "image_id", int, path, where), f"#{k}", path)
        ann_id = len(instances) + 1
        source = {"id": ann_id, "iscrowd": 0, **det}
        instances.append(
            make_instance(
                path,
                source,
                image,
                ann_id=ann_id,
                modal=require(det, "segmentation", (list, dict), path, where),
                category_id=int(det.get("category_id", 1)),
            )
        )
    return Dataset(path, "coco", base.images, instances, base.categories, base.extra)
