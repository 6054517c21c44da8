"""The augmented-COCO output schema and atomic JSON writing.

Per non-crowd annotation: ``segmentation``/``bbox``/``area`` become the amodal mask, box and area;
``visible_mask``/``visible_bbox``/``visible_area`` hold the input's modal ones (input polygons are
kept verbatim as ``visible_polygons``, or as the ``segmentation`` itself where nothing hides the
object); ``invisible_mask`` = amodal minus visible, ``occlude_rate`` = invisible / amodal area,
``occluded_by`` = sorted ids of the direct occluders, and, where the conversion estimates it,
``amodal_confidence`` = the estimated IoU of the amodal mask with the truth.
Any other input value amodalize overwrites (e.g. COCOA's annotated amodal polygon) is kept under
``source_fields``. With ``min_amodal_confidence``, a completion less sure than that is kept as
``completed_mask`` and the input mask stands as the amodal mask.

Where input masks overlap (COCO annotators outline each object alone), the visible mask is the
object's part of the partition (``infer.overlaps``: shared pixels go to the object in front), the
amodal mask holds the whole input mask, and the input segmentation is kept verbatim as
``drawn_segmentation`` (instead of ``visible_polygons``; as ``segmentation`` itself where the amodal
mask is the input mask). Crowd regions and annotations with an empty visible mask (box-only ones)
are written back as they came. Per file: ``occlusion_pairs`` (the order graph; each edge's ``score``
and, with fused ordering, ``confidence`` = P(this occluder is in front)) and ``info.amodalize`` (how
it was made, with ``overlaps``: the pairs of input masks of each kind).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from pathlib import Path

from amodalize.data.masks import box_union, rle_area, rle_bbox, rle_minus, rle_to_polygons
from amodalize.data.records import Dataset, ImageResult, Instance
from amodalize.errors import InputError

# The COCO input's modal fields move to their visible_* names instead of source_fields.
MOVED_FROM_COCO = ("segmentation", "bbox", "area")


def annotation_fields(
    inst: Instance,
    amodal: dict,
    occluders: list[int],
    fmt: str,
    kins: bool,
    polygons: bool = False,
    visible: dict | None = None,
) -> dict:
    """The fields amodalize sets on one annotation; ``polygons`` writes the amodal mask as COCO
    polygons (``masks.rle_to_polygons``) instead of a compressed RLE; ``visible`` is the visible
    mask where it is not the input mask (the input mask overlapped an object in front).

    From a COCO input, an object whose amodal mask is its input mask keeps its input
    segmentation, box and area as they were (rasterising thin polygons loses pixels), and an
    occluded object's amodal box holds its input box."""
    drawn_area = rle_area(inst.modal)
    src = inst.source
    from_coco = fmt == "coco"
    area = rle_area(amodal)
    invisible = rle_minus(amodal, inst.modal if visible is None else visible)
    invisible_area = rle_area(invisible)
    beyond_drawn = invisible_area if visible is None else rle_area(rle_minus(amodal, inst.modal))
    segmentation, bbox = amodal, rle_bbox(amodal)
    if from_coco and beyond_drawn == 0 and area == drawn_area:
        segmentation, bbox, area = src["segmentation"], src.get("bbox", bbox), src.get("area", area)
    elif from_coco and _is_box(src.get("bbox")):
        bbox = box_union(bbox, src["bbox"])
    if polygons and not isinstance(segmentation, list):  # input polygons stay verbatim, RLE is traced
        segmentation = rle_to_polygons(amodal)
    fields = {
        "segmentation": segmentation,
        "bbox": bbox,
        "area": area,
        "visible_mask": inst.modal,
        "visible_bbox": src["bbox"] if from_coco and "bbox" in src else rle_bbox(inst.modal),
        "visible_area": src["area"] if from_coco and "area" in src else drawn_area,
        "invisible_mask": invisible,
        "occlude_rate": invisible_area / area if area else 0.0,
        "occluded_by": sorted(occluders),
    }
    if visible is not None:
        fields.update(
            visible_mask=visible,
            visible_bbox=rle_bbox(visible),
            visible_area=rle_area(visible),
        )
        if segmentation is not src.get("segmentation"):  # else the input segmentation is kept as is
            fields["drawn_segmentation"] = src.get("segmentation", inst.modal)
    if kins:
        fields["inmodal_seg"] = fields["visible_mask"]
        fields["inmodal_bbox"] = fields["visible_bbox"]
    return fields


def _is_box(value: object) -> bool:
    """True for a COCO box: four numbers."""
    return isinstance(value, list) and len(value) == 4 and all(isinstance(v, (int, float)) for v in value)


SEGMENTATIONS = ("rle", "polygon")


def augment(
    dataset: Dataset,
    results: dict[int, ImageResult],
    meta: dict,
    compat_kins: bool = False,
    segmentation: str = "rle",
    min_amodal_confidence: float = 0.0,
) -> dict:
    """The output document: the input with amodal masks, order and provenance added.

    ``results`` maps every image id to its ImageResult; ``segmentation`` is how amodal masks are
    written: 'rle' (compressed) or 'polygon' (COCO polygons, for tools that read no RLE). An object
    whose ``amodal_confidence`` is below ``min_amodal_confidence`` keeps its input mask as its amodal
    mask, its completion moving to ``completed_mask``.
    """
    if segmentation not in SEGMENTATIONS:
        raise ValueError(f"unknown segmentation {segmentation!r}; choose from {', '.join(SEGMENTATIONS)}")
    occluded_by: dict[int, list[int]] = defaultdict(list)
    pairs = []
    for image in dataset.images:
        for occluder, occludee, score, confidence in results[image.id].edges:
            occluded_by[occludee].append(occluder)
            pair = {"image_id": image.id, "occluder_id": occluder, "occludee_id": occludee, "score": round(score, 4)}
            if confidence is not None:
                pair["confidence"] = confidence
            pairs.append(pair)
    annotations = []
    for inst in dataset.instances:
        ann = dict(inst.source)
        # crowd regions, and box-only or empty annotations (nothing to complete), stay as they came
        if not inst.iscrowd and inst.id in results[inst.image_id].amodal:
            result = results[inst.image_id]
            visible = result.visible.get(inst.id)
            amodal = result.amodal[inst.id]
            unsure = result.amodal_confidence.get(inst.id, 1.0) < min_amodal_confidence and amodal != inst.modal
            new = annotation_fields(
                inst,
                inst.modal if unsure else amodal,
                occluded_by[inst.id],
                dataset.format,
                compat_kins,
                segmentation == "polygon",
                visible,
            )
            if inst.id in result.amodal_confidence:
                new["amodal_confidence"] = result.amodal_confidence[inst.id]
            if unsure:
                new["completed_mask"] = amodal
            kept = {k: ann[k] for k, v in new.items() if k in ann and ann[k] != v}
            if dataset.format == "coco":
                for k in MOVED_FROM_COCO:
                    kept.pop(k, None)
                # input polygons are stored once: as the segmentation where it is kept, else here
                if (
                    isinstance(ann.get("segmentation"), list)
                    and visible is None
                    and new["segmentation"] is not ann["segmentation"]
                ):
                    new["visible_polygons"] = ann["segmentation"]
            if kept:
                new["source_fields"] = {**ann.get("source_fields", {}), **kept}
            ann.update(new)
        annotations.append(ann)
    doc = dict(dataset.extra)
    info = dict(doc.get("info") or {})
    info["amodalize"] = meta
    doc.update(
        info=info,
        images=[image.source for image in dataset.images],
        annotations=annotations,
        categories=dataset.categories,
        occlusion_pairs=pairs,
    )
    return doc


def with_polygons(doc: dict) -> dict:
    """``doc`` with every non-crowd annotation's RLE ``segmentation`` written as COCO polygons
    (``masks.rle_to_polygons``; crowd regions stay RLE, as COCO has them)."""
    annotations = []
    for ann in doc.get("annotations", []):
        seg = ann.get("segmentation")
        if isinstance(seg, dict) and not ann.get("iscrowd"):
            ann = {**ann, "segmentation": rle_to_polygons(seg)}
        annotations.append(ann)
    return {**doc, "annotations": annotations}


def current_umask() -> int:
    """The process's file-creation mask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_json_atomic(path: str | Path, doc: object) -> None:
    """Write JSON to a temporary file beside ``path`` and rename it over: never half a file."""
    write_text_atomic(path, json.dumps(doc, separators=(",", ":")))


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write text to a temporary file beside ``path`` and rename it over, with the mode a new
    file gets under the umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file private (0600), and the rename would keep that
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def merge_parts(docs: list[dict], paths: list[Path]) -> dict:
    """Join shard part documents (``info.amodalize.shard``) into the document one run would write.

    Raises InputError unless the parts come from the same input and settings and cover every
    shard exactly once.
    """
    metas = []
    for doc, path in zip(docs, paths):
        meta = doc.get("info", {}).get("amodalize", {}) if isinstance(doc, dict) else {}
        if "shard" not in meta:
            raise InputError(path, "is not a shard part (no info.amodalize.shard); make parts with convert --shard K/N")
        metas.append(meta)
    base = {k: v for k, v in metas[0].items() if k != "shard"}
    for meta, path in zip(metas, paths):
        if {k: v for k, v in meta.items() if k != "shard"} != base:
            raise InputError(path, f"was made from another input, checkpoint or settings than {paths[0]}")
    count, total = metas[0]["shard"]["count"], metas[0]["shard"]["images_total"]
    indices = sorted(m["shard"]["index"] for m in metas)
    if indices != list(range(count)) or any(m["shard"]["count"] != count for m in metas):
        raise InputError(
            paths[0], f"the parts hold shards {indices} of {count}; each of 0..{count - 1} must appear once"
        )
    images: list = [None] * total
    annotations = []
    for doc, meta, path in zip(docs, metas, paths):
        k = meta["shard"]["index"]
        slots = range(k, total, count)
        if len(slots) != len(doc["images"]):
            raise InputError(
                path, f"holds {len(doc['images'])} images, shard {k}/{count} of {total} needs {len(slots)}"
            )
        for slot, image in zip(slots, doc["images"]):
            images[slot] = image
        annotations += zip(meta["shard"]["annotation_index"], doc["annotations"])
    position = {image["id"]: n for n, image in enumerate(images)}
    pairs = sorted((p for doc in docs for p in doc["occlusion_pairs"]), key=lambda p: position[p["image_id"]])
    merged = dict(docs[0])
    merged.update(
        info={**docs[0]["info"], "amodalize": base},
        images=images,
        annotations=[ann for _, ann in sorted(annotations, key=lambda a: a[0])],
        occlusion_pairs=pairs,
    )
    return merged
