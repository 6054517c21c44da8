"""The Python API: ``convert_file`` (what ``amodalize convert`` does) and ``Amodalizer``, which loads
PCNet-M once and completes one image's modal masks in memory, as segment-anything's predictor
holds its model. Nothing here prints; problems raise ``amodalize.errors`` as the CLI reports them.

    import amodalize

    model = amodalize.Amodalizer()                 # the shipped model; checkpoint="run/checkpoint.pt"
    result = model.complete([mask_a, mask_b])      # H x W bool arrays, one per object
    result.amodal[0], result.edges, result.amodal_confidence
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from amodalize import pipeline
from amodalize.data.formats import read_dataset
from amodalize.data.masks import decode_crop, encode_crop, rle_bbox, tight
from amodalize.data.records import Dataset, ImageRecord, ImageResult, Instance
from amodalize.errors import InputError
from amodalize.infer.hosts import convert_dataset
from amodalize.infer.settings import ConvertRequest, decide, load_completer, settings_record

__all__ = ["Amodalizer", "Completion", "Edge", "convert_file"]


def convert_file(input_json: str | Path, output_json: str | Path, **options: object) -> dict:
    """What ``amodalize convert INPUT_JSON OUTPUT_JSON`` does, without printing: ``options`` are its
    flags by their Python names (``checkpoint``, ``method``, ``order``, ``segmentation``,
    ``amodal_th``, ``review_json``, ...), checked before anything is read (a misspelt one raises
    InputError); returns the summary the command prints."""
    request, rest = ConvertRequest.split(options, pipeline.FILE_OPTIONS)
    for key in ("images_from", "review_json"):
        if rest.get(key) is not None:
            rest[key] = Path(rest[key])
    return pipeline.convert_file(Path(input_json), Path(output_json), request, **rest)


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
    """PCNet-M loaded and its settings decided once; then ``complete`` runs only the network and the
    mask work for each image.

    Args:
        checkpoint: a shipped model's name, an ``amodalize train`` checkpoint or the reference's
            ``*.pth.tar``; None: the shipped default.
        sample: data like what will be completed, to decide the settings on as ``convert`` decides
            them on a file (the gap between neighbouring masks, thresholds, the ordering fusion fitted
            on scenes of its shapes): an annotation file's path, a list of one image's H x W masks, or
            a list of such lists. None: the checkpoint's own calibration for touching masks.
        device: 'auto', 'cpu' or 'cuda'.
        batch_size: queries per forward (None: the device's default).
        tta: test-time augmentation, 'flip' (the default) or 'none'.
        reference: the reference test protocol's settings, as ``convert --reference``.
        **settings: ``ConvertOptions`` fields as ``convert``'s flags set them (e.g. ``amodal_th``).

    ``options`` and ``decided`` hold the settings and how they were decided (as a converted file's
    ``info.amodalize.settings`` / ``decided``). Given a file as ``sample``, ``complete`` gives for
    each of its images what ``convert`` writes for that file.
    """

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        *,
        sample: str | Path | Sequence | None = None,
        device: str = "auto",
        batch_size: int | None = None,
        tta: str | None = None,
        reference: bool = False,
        **settings: object,
    ) -> None:
        request = ConvertRequest("pcnet", None, checkpoint, reference, tta, settings)
        self.completer, self.checkpoint = load_completer(checkpoint, device, batch_size, tta=request.tta_mode)
        data = None if sample is None else sample_dataset(sample)
        self.options, self.decided = decide(request, data, self.completer, self.checkpoint)
        # as a converted file records them (tuples as lists)
        self.record = json.loads(json.dumps({"settings": settings_record(self.options), "decided": self.decided}))

    def complete(self, masks: Sequence[np.ndarray], categories: Sequence[int] | None = None) -> Completion:
        """Amodal masks, order and confidences of the objects whose modal (visible) ``masks`` are
        given: H x W arrays, nonzero where the object is visible; ``categories``: their category
        ids (names only: the shipped model never sees them)."""
        return self.complete_many([masks], None if categories is None else [categories])[0]

    def complete_many(
        self, images: Sequence[Sequence[np.ndarray]], categories: Sequence[Sequence[int]] | None = None
    ) -> list[Completion]:
        """``complete`` for several images at once (their network queries batched together): a list of
        each image's masks (sizes may differ between images), and of their categories."""
        dataset = images_dataset(images, categories)
        results = convert_dataset(dataset, self.options, completer=self.completer)
        return [_completion(dataset, image, results[image.id], self.record) for image in dataset.images]


def _completion(dataset: Dataset, image: ImageRecord, result: ImageResult, record: dict) -> Completion:
    """One image's Completion from its conversion result (indices count from its first annotation)."""
    insts = dataset.by_image[image.id]
    first = insts[0].id
    window = (0, 0, image.width, image.height)
    amodal = [decode_crop(result.amodal.get(i.id, i.modal)).within(window) for i in insts]
    edges = [Edge(front - first, back - first, round(score, 4), conf) for front, back, score, conf in result.edges]
    confidence = [result.amodal_confidence.get(i.id) for i in insts]
    visible = [decode_crop(result.visible.get(i.id, i.modal)).within(window) for i in insts]
    return Completion(amodal, edges, confidence, record, visible)


def sample_dataset(sample: str | Path | Sequence) -> Dataset:
    """The data an Amodalizer decides its settings on: an annotation file, one image's masks, or a
    list of images' masks."""
    if isinstance(sample, (str, Path)):
        return read_dataset(sample)
    if len(sample) and np.asarray(sample[0]).ndim == 2:
        return masks_dataset(sample)
    return images_dataset(sample)


def images_dataset(
    images: Sequence[Sequence[np.ndarray]], categories: Sequence[Sequence[int]] | None = None
) -> Dataset:
    """A dataset of several images' masks: image ids 1..K, annotation ids counted on across them."""
    if len(images) == 0:
        raise InputError("masks", "no image given")
    if categories is not None and len(categories) != len(images):
        raise InputError("categories", f"categories for {len(categories)} images, masks for {len(images)}")
    parts = [masks_dataset(m, None if categories is None else categories[k]) for k, m in enumerate(images)]
    records, instances, first = [], [], 1
    for k, part in enumerate(parts, start=1):
        image = part.images[0]
        records.append(ImageRecord(k, image.width, image.height, None, {**image.source, "id": k}))
        for inst in part.instances:
            ann_id = first + inst.id - 1
            source = {**inst.source, "id": ann_id, "image_id": k}
            instances.append(dataclasses.replace(inst, id=ann_id, image_id=k, source=source))
        first += len(part.instances)
    categories_doc = [{"id": c, "name": str(c)} for c in sorted({i.category_id for i in instances})]
    return Dataset(Path("masks"), "coco", records, instances, categories_doc)


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
