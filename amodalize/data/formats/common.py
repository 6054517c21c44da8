"""Field checks shared by the readers: every problem becomes one InputError naming the file."""

from __future__ import annotations

import json
from pathlib import Path

from amodalize.data.masks import reaches_outside, rle_area, rle_bbox, to_rle
from amodalize.data.records import ImageRecord, Instance
from amodalize.errors import FormatError, InputError

# Annotated boxes may overhang the image by rounding; more than this is an error.
BBOX_SLACK = 1.0


def load_json(path: Path) -> object:
    """Parse a JSON file, reporting a missing file or a syntax error as one line."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except IsADirectoryError:
        raise InputError(path, "is a directory, expected a JSON file") from None
    except UnicodeDecodeError:
        raise InputError(path, "not valid JSON (not UTF-8 text)") from None
    except json.JSONDecodeError as e:
        raise InputError(path, f"not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None


def require(obj: dict, key: str, kind: type | tuple[type, ...], path: Path, where: str) -> object:
    """``obj[key]``, checked to exist and to be of ``kind``."""
    if not isinstance(obj, dict):
        raise InputError(path, f"{where} is not an object")
    if key not in obj:
        raise InputError(path, f"{where} has no '{key}'")
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise InputError(path, f"{where}: '{key}' must be {names}, got {type(value).__name__}")
    return value


def read_images(doc: dict, path: Path) -> list[ImageRecord]:
    """The COCO ``images`` list as records, checking ids are unique and sizes positive."""
    images = require(doc, "images", list, path, "the top level")
    records, seen = [], set()
    for k, image in enumerate(images):
        where = f"images[{k}]"
        image_id = require(image, "id", int, path, where)
        width = require(image, "width", int, path, where)
        height = require(image, "height", int, path, where)
        if width <= 0 or height <= 0:
            raise InputError(path, f"image {image_id} has size {width}x{height}")
        if image_id in seen:
            raise InputError(path, f"duplicate image id {image_id}")
        seen.add(image_id)
        records.append(ImageRecord(image_id, width, height, image.get("file_name"), image))
    return records


def check_unique_ids(instances: list[Instance], path: Path) -> None:
    """Raise on the first annotation id used twice."""
    seen = set()
    for inst in instances:
        if inst.id in seen:
            raise InputError(path, f"duplicate annotation id {inst.id}")
        seen.add(inst.id)


def image_of(images: dict[int, ImageRecord], image_id: object, ann_id: object, path: Path) -> ImageRecord:
    """The image an annotation points to, or an error naming both."""
    if image_id not in images:
        raise InputError(path, f"annotation {ann_id} points to image {image_id}, which is not in 'images'")
    return images[image_id]


def make_instance(
    path: Path,
    source: dict,
    image: ImageRecord,
    *,
    ann_id: int,
    modal: object,
    amodal: object = None,
    category_id: int = 1,
    iscrowd: bool = False,
    occluded_by: tuple[int, ...] | None = None,
) -> Instance:
    """Build an Instance from raw segmentations, reporting bad masks and boxes with the id."""
    h, w = image.height, image.width
    try:
        modal_rle = to_rle(modal, h, w)
        amodal_rle = None if amodal is None else to_rle(amodal, h, w)
    except FormatError as e:
        raise InputError(path, f"annotation {ann_id}: {e}") from None
    declared = source.get("bbox")
    if isinstance(declared, list) and len(declared) == 4:
        x, y, bw, bh = declared
        if x < -BBOX_SLACK or y < -BBOX_SLACK or x + bw > w + BBOX_SLACK or y + bh > h + BBOX_SLACK:
            raise InputError(path, f"annotation {ann_id}: bbox {declared} lies outside the {w}x{h} image")
    if rle_area(modal_rle) > 0 or amodal_rle is None:
        bbox = rle_bbox(modal_rle)
    else:
        bbox = rle_bbox(amodal_rle)  # fully hidden: the reference falls back to the amodal box
    return Instance(
        id=ann_id,
        image_id=image.id,
        category_id=category_id,
        modal=modal_rle,
        bbox=bbox,
        iscrowd=iscrowd,
        amodal=amodal_rle,
        occluded_by=occluded_by,
        source=source,
        clipped=reaches_outside(modal, h, w, BBOX_SLACK) or reaches_outside(amodal, h, w, BBOX_SLACK),
    )
