"""COCO-style instance files: plain COCO (modal), COCO-amodal (our output, synth GT) and KINS.

They differ only in which keys hold the visible (modal) and the amodal segmentation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from amodalize.data.formats.common import check_unique_ids, image_of, make_instance, read_images, require
from amodalize.data.records import Dataset, Instance
from amodalize.errors import InputError

DEFAULT_CATEGORIES = [{"id": 1, "name": "object", "supercategory": "object"}]


@dataclass(frozen=True)
class Layout:
    """Where a COCO-style format keeps its masks: ``modal``/``amodal`` keys, tried in order."""

    name: str
    modal: tuple[str, ...]
    amodal: tuple[str, ...] = ()
    marker: str | None = None  # a key whose presence identifies the format
    modal_defaults_to_amodal: bool = False
    # Our output keeps a KINS input's keys beside visible_mask: the amodal layout must win then.
    confidence: int = 2


COCO = Layout("coco", modal=("segmentation",))
# Our own output and synth ground truth; COCOA-style GT omits visible_mask on unoccluded objects.
COCO_AMODAL = Layout("coco_amodal", ("visible_mask",), ("segmentation",), "visible_mask", True, confidence=3)
KINS = Layout("kins", ("inmodal_seg",), ("segmentation",), "inmodal_seg")
KINS_2020 = Layout("kins", ("i_segm",), ("a_segm",), "i_segm")


def detect(doc: object, layout: Layout) -> int:
    """Confidence (0 none, 1 generic COCO, more when the layout's marker key is found) for ``doc``."""
    if not isinstance(doc, dict) or not isinstance(doc.get("annotations"), list):
        return 0
    anns = [a for a in doc["annotations"] if isinstance(a, dict)]
    if any("regions" in a for a in anns):
        return 0
    if layout.marker is None:
        return 1
    return layout.confidence if any(layout.marker in a for a in anns) else 0


def read(doc: dict, path: Path, layout: Layout) -> Dataset:
    """Read a COCO-style file with the given mask layout."""
    records = read_images(doc, path)
    images = {r.id: r for r in records}
    anns = require(doc, "annotations", list, path, "the top level")
    instances: list[Instance] = []
    for k, ann in enumerate(anns):
        where = f"annotations[{k}]"
        ann_id = require(ann, "id", int, path, where)
        image = image_of(images, require(ann, "image_id", int, path, where), ann_id, path)
        modal_key = next((key for key in layout.modal if key in ann), None)
        amodal_key = next((key for key in layout.amodal if key in ann), None)
        if layout.amodal and amodal_key is None:
            raise InputError(path, f"annotation {ann_id} has no amodal '{layout.amodal[0]}'")
        if modal_key is None:
            if not layout.modal_defaults_to_amodal:
                raise InputError(path, f"annotation {ann_id} has no '{layout.modal[0]}'")
            modal_key = amodal_key
        occluded_by = ann.get("occluded_by")
        instances.append(
            make_instance(
                path,
                ann,
                image,
                ann_id=ann_id,
                modal=ann[modal_key],
                amodal=ann[amodal_key] if amodal_key else None,
                category_id=int(ann.get("category_id", 1)),
                iscrowd=bool(ann.get("iscrowd", 0)),
                occluded_by=tuple(occluded_by) if isinstance(occluded_by, list) else None,
            )
        )
    check_unique_ids(instances, path)
    extra = {k: v for k, v in doc.items() if k not in ("images", "annotations", "categories")}
    categories = doc.get("categories") or DEFAULT_CATEGORIES
    return Dataset(path, layout.name, records, instances, categories, extra)
