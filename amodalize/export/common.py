"""What every export reads from a converted file: its images, annotations, edges and categories."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from amodalize.data.formats.common import load_json, require
from amodalize.data.masks import rle_to_polygons, to_rle
from amodalize.errors import FormatError, InputError

# Label Studio's local files: LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT/images, a subfolder (Label
# Studio serves no storage at the document root itself), holds the images by file_name.
LOCAL_FILES = "/data/local-files/?d=images/"


@dataclass(frozen=True)
class ExportOptions:
    """What a target may need beside the converted file.

    images_dir: a folder of the images (YOLO links them beside its labels; others ignore it).
    image_root: what Label Studio puts before each file_name to make a task's image URL.
    """

    images_dir: Path | None = None
    image_root: str = LOCAL_FILES


DEFAULTS = ExportOptions()


@dataclass
class ExportObject:
    """One converted object: its annotation, amodal and visible outlines as COCO polygons (image
    pixels), the ids of its direct occluders and its ``amodal_confidence`` (None where absent)."""

    annotation: dict
    amodal: list[list[float]]
    visible: list[list[float]]
    occluded_by: list[int] = field(default_factory=list)
    confidence: float | None = None


@dataclass
class ExportImage:
    """One image of a converted file: its COCO image entry, objects and order edges, and every
    annotation of it as the file holds it (crowd regions and box-only ones too)."""

    image: dict
    objects: list[ExportObject]
    edges: list[dict]
    annotations: list[dict] = field(default_factory=list)


def read_converted(path: Path) -> tuple[list[ExportImage], list[dict]]:
    """The images (with their non-crowd objects and edges) and categories of a ``convert`` output;
    InputError where the file is not one."""
    return converted_images(load_json(path), path)


def converted_images(doc: dict, path: Path) -> tuple[list[ExportImage], list[dict]]:
    """``read_converted`` of a document already read from ``path``."""
    images = require(doc, "images", list, path, "the top level")
    annotations = require(doc, "annotations", list, path, "the top level")
    if not any("visible_mask" in a for a in annotations if isinstance(a, dict)):
        raise InputError(path, "holds no converted annotation (no visible_mask): run `amodalize convert` on it first")
    sizes = {im["id"]: (im["height"], im["width"]) for im in images}
    objects: dict[int, list[ExportObject]] = defaultdict(list)
    held: dict[int, list[dict]] = defaultdict(list)
    for ann in annotations:
        held[ann["image_id"]].append(ann)
        if ann.get("iscrowd") or "visible_mask" not in ann:
            continue  # crowd regions and box-only annotations have nothing to outline
        h, w = sizes[ann["image_id"]]
        try:
            amodal, visible = (_polygons(ann[key], h, w) for key in ("segmentation", "visible_mask"))
        except FormatError as e:
            raise InputError(path, f"annotation {ann['id']}: {e}") from None
        objects[ann["image_id"]].append(
            ExportObject(ann, amodal, visible, list(ann.get("occluded_by", [])), ann.get("amodal_confidence"))
        )
    edges: dict[int, list[dict]] = defaultdict(list)
    for pair in doc.get("occlusion_pairs", []):
        edges[pair["image_id"]].append(pair)
    out = [ExportImage(im, objects[im["id"]], edges[im["id"]], held[im["id"]]) for im in images]
    return out, doc.get("categories") or []


def _polygons(segmentation: object, height: int, width: int) -> list[list[float]]:
    """A segmentation (polygons kept as they are, RLE traced) as COCO polygons."""
    if isinstance(segmentation, list) and all(isinstance(p, list) for p in segmentation):
        return segmentation
    return rle_to_polygons(to_rle(segmentation, height, width))


def category_names(categories: list[dict], images: list[ExportImage]) -> dict[int, str]:
    """Name of every category id used by the objects (the id itself where the file names none)."""
    names = {c["id"]: str(c.get("name", c["id"])) for c in categories}
    for image in images:
        for obj in image.objects:
            category = obj.annotation.get("category_id", 1)
            names.setdefault(category, str(category))
    return dict(sorted(names.items()))
