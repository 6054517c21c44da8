"""The Python API: ``convert_file`` (what ``amodalize convert`` does) and ``Amodalizer``, which loads
PCNet-M once and completes one image's modal masks in memory, as segment-anything's predictor
holds its model. Nothing here prints; problems raise ``amodalize.errors`` as the CLI reports them.

    import amodalize

    model = amodalize.Amodalizer()                 # the shipped model; checkpoint="run/checkpoint.pt"
    result = model.complete([mask_a, mask_b])      # H x W bool arrays, one per object
    result.amodal[0], result.edges, result.amodal_confidence
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from amodalize import pipeline
from amodalize.data.masks import decode_crop, encode_crop, rle_bbox, tight
from amodalize.data.records import Dataset, ImageRecord, Instance
from amodalize.errors import InputError
from amodalize.infer.hosts import convert_dataset
from amodalize.pipeline import learned_protocol, load_completer, resolve_options, settings_record

__all__ = ["Amodalizer", "Completion", "Edge", "convert_file"]


def convert_file(input_json: str | Path, output_json: str | Path, **options: object) -> dict:
    """What ``amodalize convert INPUT_JSON OUTPUT_JSON`` does, without printing: ``options`` are its
    flags by their Python names (``checkpoint``, ``method``, ``order``, ``segmentation``,
    ``amodal_th``, ``review_json``, ...); returns the summary the command prints."""
    for key in ("images_from", "review_json"):
        if options.get(key) is not None:
            options[key] = Path(options[key])
    return pipeline.convert_file(Path(input_json), Path(output_json), **options)


class Edge(NamedTuple):
    """``occluder`` is in front of ``occludee`` (indices into the masks given); ``score`` in [0, 1]
    and ``confidence`` = P(this direction is right), as ``occlusion_pairs`` holds them."""

    occluder: int
    occludee: int
    score: float
    confidence: float | None


@dataclass
class Completion:
    """One image's result: ``amodal[k]`` the completed H x W bool mask of input mask k (the input
    itself for an empty one), ``edges`` the occlusion order, ``amodal_confidence[k]`` the estimated
    IoU of ``amodal[k]`` with the truth (None where none is estimated), ``settings`` what was used
    and how it was decided (``info.amodalize.settings`` / ``decided`` of a converted file), and
    ``visible[k]`` the part of input mask k that is visible: the mask itself, or where masks
    overlap (drawn as COCO annotators draw) its part of them once each shared pixel went to the
    object in front."""

    amodal: list[np.ndarray]
    edges: list[Edge]
    amodal_confidence: list[float | None]
    settings: dict = field(default_factory=dict)
    visible: list[np.ndarray] = field(default_factory=list)


class Amodalizer:
    """PCNet-M loaded once, completing one image's modal masks at a time.

    Args:
        checkpoint: a shipped model's name, an ``amodalize train`` checkpoint or the reference's
            ``*.pth.tar``; None: the shipped default.
        device: 'auto', 'cpu' or 'cuda'.
        batch_size: queries per forward (None: the device's default).
        tta: test-time augmentation, 'flip' (the default) or 'none'.
        reference: the reference test protocol's settings, as ``convert --reference``.
        **settings: ``ConvertOptions`` fields as ``convert``'s flags set them (e.g. ``amodal_th``).

    ``complete`` decides its settings on the image it is given, exactly as ``convert`` does on a
    file holding that one image, and gives the same masks, edges and confidences.
    """

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        *,
        device: str = "auto",
        batch_size: int | None = None,
        tta: str | None = None,
        reference: bool = False,
        **settings: object,
    ) -> None:
        self.order, tta = learned_protocol(reference, tta)
        self.completer, self.checkpoint = load_completer(checkpoint, device, batch_size, tta=tta)
        self.reference = reference
        self.settings = settings

    def complete(self, masks: Sequence[np.ndarray], categories: Sequence[int] | None = None) -> Completion:
        """Amodal masks, order and confidences of the objects whose modal (visible) ``masks`` are
        given: H x W arrays, nonzero where the object is visible; ``categories``: their category
        ids (names only: the shipped model never sees them)."""
        dataset = masks_dataset(masks, categories)
        opts, decided = resolve_options(
            dataset, "pcnet", self.order, dict(self.settings), self.completer, self.checkpoint, self.reference
        )
        result = convert_dataset(dataset, opts, completer=self.completer)[1]
        height, width = dataset.images[0].height, dataset.images[0].width
        window = (0, 0, width, height)
        amodal = [decode_crop(result.amodal.get(inst.id, inst.modal)).within(window) for inst in dataset.instances]
        edges = [Edge(front - 1, back - 1, round(score, 4), conf) for front, back, score, conf in result.edges]
        confidence = [result.amodal_confidence.get(inst.id) for inst in dataset.instances]
        # as a converted file records them (tuples as lists)
        record = json.loads(json.dumps({"settings": settings_record(opts), "decided": decided}))
        visible = [decode_crop(result.visible.get(inst.id, inst.modal)).within(window) for inst in dataset.instances]
        return Completion(amodal, edges, confidence, record, visible)


def masks_dataset(masks: Sequence[np.ndarray], categories: Sequence[int] | None = None) -> Dataset:
    """A one-image dataset (image id 1, annotation ids 1..N in order) of H x W modal masks."""
    if len(masks) == 0:
        raise InputError("masks", "no mask given")
    arrays = [np.asarray(m) for m in masks]
    shape = arrays[0].shape
    for k, m in enumerate(arrays):
        if m.ndim != 2 or m.shape != shape or min(shape) == 0:
            raise InputError("masks", f"mask {k} has shape {m.shape}; every mask must be H x W, as mask 0 {shape}")
    if categories is not None and len(categories) != len(arrays):
        raise InputError("categories", f"{len(categories)} categories for {len(arrays)} masks")
    height, width = shape
    image = ImageRecord(1, width, height, None, {"id": 1, "width": width, "height": height})
    instances = []
    for k, m in enumerate(arrays):
        rle = encode_crop(tight(m != 0), height, width)
        category = 1 if categories is None else int(categories[k])
        source = {"id": k + 1, "image_id": 1, "category_id": category, "iscrowd": 0, "segmentation": rle}
        instances.append(Instance(k + 1, 1, category, rle, rle_bbox(rle), source=source))
    categories_doc = [{"id": c, "name": str(c)} for c in sorted({i.category_id for i in instances})]
    return Dataset(Path("masks"), "coco", [image], instances, categories_doc)
