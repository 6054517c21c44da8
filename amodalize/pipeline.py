"""File-level conversion: read, load PCNet-M if asked, convert in resumable chunks, write.

Finished chunks are flushed to ``OUT.json.parts/`` and skipped by a rerun with the same input and
settings; the final file is written atomically and the parts removed. ``shard=(K, N)`` converts
images ``K, K+N, K+2N, ...`` into a part file that ``merge_files`` joins with the others.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from amodalize.config import AUTO, DataConfig
from amodalize.data.bank import InstanceBank, build_bank
from amodalize.data.formats import read_dataset
from amodalize.data.formats.common import load_json
from amodalize.data.formats.detections import read_detections
from amodalize.data.gaps import estimate_gap, modal_groups
from amodalize.data.masks import rle_area
from amodalize.data.records import Dataset, ImageResult
from amodalize.data.writer import augment, merge_parts, write_json_atomic
from amodalize.infer.batcher import Completer, default_batch_size, keep_freed_memory, resolve_device
from amodalize.infer.calibrate import calibrate, fit_fusion, fusion_scenes
from amodalize.infer.convert import ConvertOptions, check_settings
from amodalize.infer.fusion import IoUModel, OrderFusion
from amodalize.infer.hosts import convert_dataset
from amodalize.infer.overlaps import KINDS
from amodalize.models.pcnet_m import load_pcnet_m
from amodalize.models.registry import DEFAULT_MODEL, file_sha256, resolve_checkpoint
from amodalize.models.unet import fold_batchnorm, freeze_for_cpu
from amodalize.review import review
from amodalize.version import __version__

# Test-time augmentation of PCNet-M queries unless asked otherwise (docs/measurements.md, "Better than geometry").
DEFAULT_TTA = "flip"
# Completed/visible area of instances with nothing in front above this means a badly calibrated model.
CALIBRATION_LIMIT = 1.3


def load_completer(
    checkpoint: str | Path | None,
    device: str = "auto",
    batch_size: int | None = None,
    fold: bool = True,
    freeze: bool = True,
    tta: str = DEFAULT_TTA,
) -> tuple[Completer, dict]:
    """A Completer for a PCNet-M checkpoint (a path, the name of a shipped model, or None for the
    default shipped one) and its provenance record (with its calibration). ``fold`` folds the
    BatchNorms into the convolutions (the same up to float rounding); ``freeze`` runs the model as
    frozen TorchScript on CPU (the same outputs, faster); ``tta`` is the test-time augmentation."""
    path, shipped = resolve_checkpoint(checkpoint or DEFAULT_MODEL)
    loaded = load_pcnet_m(path)
    dev = resolve_device(device)
    batch = batch_size or default_batch_size(dev, loaded.input_size)
    model = fold_batchnorm(loaded.model) if fold else loaded.model
    if dev.type == "cpu":
        keep_freed_memory()
        if freeze:
            model = freeze_for_cpu(model, loaded.input_size)
    completer = Completer(
        model, loaded.input_size, device=dev, batch_size=batch, amp=False, tta=tta, categories=loaded.categories
    )
    info = {
        "path": str(path),
        "shipped_model": shipped,
        "sha256": file_sha256(path),
        "kind": loaded.kind,
        "input_size": loaded.input_size,
        "calibration": loaded.calibration,
        "gap_calibrations": list(loaded.gap_calibrations),
        "tta": tta,
        "categories": loaded.categories,
        "categories_seen": None if loaded.categories_seen is None else list(loaded.categories_seen),
    }
    return completer, info


def unseen_categories(dataset: Dataset, ckpt_info: dict | None) -> list[int]:
    """Category ids of ``dataset`` that a model taking categories ('multiply') never saw in training
    (none for a model that ignores them, or whose training ids are not recorded)."""
    if not ckpt_info or ckpt_info["categories"] != "multiply" or ckpt_info["categories_seen"] is None:
        return []
    return sorted({i.category_id for i in dataset.instances} - set(ckpt_info["categories_seen"]))


# The reference test protocol (reference protocol §6.1): every setting `convert --reference` fixes.
REFERENCE_SETTINGS = {
    "order_th": 0.1,
    "amodal_th": 0.2,
    "eraser_dilate": 0,
    "keep_visible": False,
    "clip_to_occluders": False,
    "completion_resize": "bilinear",
    "paste_resize": "binary",
    "complete_empty": True,
    "recentre": 0,
    "grow_to_occluders": 0,
    "max_aspect": 0,
}
# What a file none of whose annotations has a visible mask records as the source of its settings.
NOTHING_TO_COMPLETE = "nothing to complete: no annotation has a visible mask"
# What fitting the fusion on the input buys over a shipped model's own (docs/measurements.md,
# "A predictor that decides once").
FITTED_ON_INPUT = "ordering +0.2 to +2.0 points over the shipped model's own fusion on touching masks, for about 2 s"
# Images whose instances a calibration on the input draws from, at most.
CALIBRATION_IMAGES = 400
# Defaults for a checkpoint with no calibration (reference checkpoints, older amodalize ones).
UNCALIBRATED = {"order_th": 0.1, "amodal_th": 0.2}


def input_bank(dataset: Dataset) -> InstanceBank:
    """The instances of at most CALIBRATION_IMAGES images with a visible mask, spread over the input,
    to calibrate on."""
    images = [im for im in dataset.images if any(rle_area(i.modal) for i in dataset.by_image[im.id] if not i.iscrowd)]
    step = max(1, len(images) // CALIBRATION_IMAGES)
    return build_bank([subset(dataset, images[::step])])


def calibration_samples(completer: Completer) -> int:
    """Scenes for calibrating on the input: fewer where each query is expensive (a large model on CPU)."""
    return 300 if completer.device.type == "cuda" or completer.input_size <= 64 else 100


def resolve_options(
    dataset: Dataset,
    method: str,
    order: str,
    settings: dict,
    completer: Completer | None,
    ckpt_info: dict | None,
    reference: bool = False,
) -> tuple[ConvertOptions, dict]:
    """ConvertOptions with every 'auto' setting decided, and a record of how.

    ``settings`` are ConvertOptions fields, where ``order_th``/``amodal_th`` None and
    ``eraser_dilate`` 'auto' ask for a decision: the gap between neighbouring masks is measured on
    the input; thresholds and dilation come from the checkpoint's calibration when it was made at
    that gap, else from a calibration on the input's own instances (no ground truth needed);
    checkpoints without calibration keep the reference thresholds and bridge the gap. Explicit
    values always win; ``reference`` fixes every setting of the reference test protocol. For fused
    ordering the fusion and IoU-model weights are decided too (``_with_fusion``).
    """
    if reference:
        return ConvertOptions(method, order, **{**settings, **REFERENCE_SETTINGS}), {"source": "reference protocol"}
    settings = {"eraser_dilate": AUTO, **settings}
    wanted = [k for k in ("order_th", "amodal_th", "eraser_dilate") if settings.get(k) in (None, AUTO)]
    record: dict = {"source": "flags" if not wanted else None}
    gap = 0
    if settings.get("eraser_dilate") == AUTO:
        measured = estimate_gap(modal_groups(dataset))
        gap = measured.gap
        record["gap"] = measured.to_json()
    if completer is None:
        settings.update({k: UNCALIBRATED.get(k, gap) for k in wanted})
        record["source"] = record["source"] or "no model"
        return ConvertOptions(method, order, gap=gap, **settings), record
    if not wanted:
        return _with_fusion(dataset, ConvertOptions(method, order, gap=gap, **settings), None, completer, record)
    cal = ckpt_info.get("calibration")
    stored = next((c for c in ckpt_info.get("gap_calibrations", []) if c["gap"] == gap), None)
    if cal is not None and (cal["gap"] == gap or "eraser_dilate" not in wanted):
        record["source"] = "the checkpoint's calibration"
    elif stored is not None:
        cal = stored
        record["source"] = f"the checkpoint's calibration at gap {gap} px"
    elif cal is not None:
        bank = input_bank(dataset)
        everyone = np.arange(len(bank))
        data = DataConfig(input_size=completer.input_size, gap=gap, enlarge_box=settings.get("enlarge", 3.0))
        samples = calibration_samples(completer)
        cal = calibrate(bank, everyone, everyone, data, gap, completer, samples=samples).to_json()
        record["source"] = (
            f"a calibration on the input (the checkpoint's was made at gap {ckpt_info['calibration']['gap']} px)"
        )
    else:
        cal = {**UNCALIBRATED, "eraser_dilate": gap}
        record["source"] = "reference thresholds (the checkpoint has no calibration)"
    record["calibration"] = cal
    settings.update({k: cal[k] for k in wanted})
    # a shipped model's fusion was fitted on its procedural training shapes: the input's own fit better
    stored = None if ckpt_info.get("shipped_model") else cal
    opts, record = _with_fusion(dataset, ConvertOptions(method, order, gap=gap, **settings), stored, completer, record)
    if stored is not cal and record.get("fusion") is not None:
        record["fusion_note"] = FITTED_ON_INPUT
    return opts, record


def model_options(
    method: str, order: str, settings: dict, completer: Completer, ckpt_info: dict
) -> tuple[ConvertOptions, dict]:
    """ConvertOptions decided from the checkpoint alone, for data not yet seen (a predictor given no
    sample): touching masks (gap 0), the thresholds, dilation, fusion and IoU model of the
    checkpoint's calibration at gap 0 where it has one (the shipped model's fusion was fitted on
    its training shapes), else the reference thresholds and dual completion alone. Explicit
    ``settings`` win."""
    settings = {"eraser_dilate": AUTO, **settings}
    wanted = [k for k in ("order_th", "amodal_th", "eraser_dilate") if settings.get(k) in (None, AUTO)]
    cal = ckpt_info.get("calibration")
    if cal is None or cal["gap"] != 0:
        cal = next((c for c in ckpt_info.get("gap_calibrations", []) if c["gap"] == 0), None)
    record: dict = {"gap": "0 px assumed (no data given: touching masks)"}
    if cal is None:
        settings.update({k: UNCALIBRATED.get(k, 0) for k in wanted})
        record["source"] = "reference thresholds (the checkpoint has no calibration at gap 0 px)"
    else:
        settings.update({k: cal[k] for k in wanted})
        record.update(source="the checkpoint's calibration at gap 0 px", calibration=cal)
    return _with_fusion(None, ConvertOptions(method, order, gap=0, **settings), cal, completer, record)


def _with_fusion(
    dataset: Dataset | None, opts: ConvertOptions, cal: dict | None, completer: Completer, record: dict
) -> tuple[ConvertOptions, dict]:
    """``opts`` with the ordering fusion and IoU model: the calibration's when it was fitted at the
    settings and gap in use (on the model's training data: the user's own), else fitted now on
    scenes of the input's own shapes (none without a ``dataset``: dual completion alone)."""
    if opts.fusion is not None or opts.order != "fused":
        return opts, record
    if _fusion_fits(cal, opts):
        fusion, iou_model = cal["fusion"], cal["iou_model"]
        record["fusion_source"] = "the calibration's"
    elif dataset is None:
        record["fusion_source"] = "none: the checkpoint holds none at these settings (dual completion alone)"
        return opts, record
    else:
        bank = input_bank(dataset)
        scenes = fusion_scenes(bank, calibration_samples(completer))
        fitted = fit_fusion(bank, opts.gap, completer, opts, n=scenes)
        if fitted is None:
            record["fusion_source"] = "none: the input's shapes make no occluded pair to fit on"
            return opts, record
        fusion, iou_model = fitted
        record.update(fusion_source="fitted on scenes of the input's own shapes", fusion=fusion, iou_model=iou_model)
    iou_weights = tuple(iou_model["weights"]) if opts.method == "pcnet" else None
    return dataclasses.replace(opts, fusion=tuple(fusion["weights"]), iou_model=iou_weights), record


def _fusion_fits(cal: dict | None, opts: ConvertOptions) -> bool:
    """True when ``cal`` holds a fusion and IoU model fitted at ``opts``'s thresholds, dilation and
    gap, with this version's features."""
    if cal is None or not cal.get("fusion") or cal["gap"] != opts.gap:
        return False
    if any(cal[k] != getattr(opts, k) for k in ("order_th", "amodal_th", "eraser_dilate")):
        return False
    try:
        OrderFusion.from_json(cal["fusion"])
        IoUModel.from_json(cal["iou_model"])
    except ValueError:  # fitted on the features of an earlier version
        return False
    return True


def parts_dir(output_json: Path) -> Path:
    """Where the finished chunks of ``output_json`` wait until the file is complete."""
    return output_json.with_name(output_json.name + ".parts")


class ChunkStore:
    """Finished chunks of one conversion, valid only for the settings they were made with."""

    def __init__(self, folder: Path, fingerprint: str) -> None:
        self.folder, self.fingerprint = folder, fingerprint

    def load(self) -> dict[int, ImageResult]:
        """Results of the finished chunks; none when the folder holds another conversion's."""
        stamp = self.folder / "settings.json"
        if not stamp.exists() or load_json(stamp).get("fingerprint") != self.fingerprint:
            return {}
        done = {}
        for part in sorted(self.folder.glob("chunk-*.json")):
            for r in load_json(part):
                done[r["image_id"]] = ImageResult.from_json(r)
        return done

    def save(self, results: list[ImageResult]) -> None:
        """Flush one finished chunk (atomically), named after its first image."""
        stamp = self.folder / "settings.json"
        if not stamp.exists() or load_json(stamp).get("fingerprint") != self.fingerprint:
            shutil.rmtree(self.folder, ignore_errors=True)
            write_json_atomic(stamp, {"fingerprint": self.fingerprint})
        write_json_atomic(self.folder / f"chunk-{results[0].image_id}.json", [r.to_json() for r in results])

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def subset(dataset: Dataset, keep: list) -> Dataset:
    """The images ``keep`` with their instances, the rest of the dataset unchanged."""
    ids = {image.id for image in keep}
    return Dataset(
        dataset.path,
        dataset.format,
        keep,
        [i for i in dataset.instances if i.image_id in ids],
        dataset.categories,
        dataset.extra,
    )


def learned_protocol(reference: bool, tta: str | None) -> tuple[str, str]:
    """The ordering method with a model and the test-time augmentation of its queries: the
    reference protocol's (dual completion, one view) or ours (fused; ``tta`` or DEFAULT_TTA)."""
    return ("pcnet", "none") if reference else ("fused", tta or DEFAULT_TTA)


def settings_record(opts: ConvertOptions) -> dict:
    """The settings a conversion records in ``info.amodalize.settings``: every option but the methods."""
    return {k: v for k, v in opts.__dict__.items() if k not in ("method", "order")}


def convert_file(
    input_json: Path,
    output_json: Path,
    *,
    checkpoint: str | Path | None = None,
    method: str | None = None,
    order: str | None = None,
    fmt: str | None = None,
    compat: str | None = None,
    segmentation: str = "rle",
    workers: int = -1,
    batch_size: int | None = None,
    device: str = "auto",
    shard: tuple[int, int] | None = None,
    images_from: Path | None = None,
    min_score: float = 0.0,
    reference: bool = False,
    tta: str | None = None,
    review_json: Path | None = None,
    min_amodal_confidence: float = 0.0,
    flush_every: int = 256,
    on_start: Callable[[int, int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    **settings: object,
) -> dict:
    """Convert one annotation file; ``settings`` are further ConvertOptions fields, 'auto' ones
    decided by ``resolve_options`` (``reference``: the reference test protocol's settings, one view);
    ``segmentation``: amodal masks as 'rle' or 'polygon' (``writer.augment``);
    ``tta``: the test-time augmentation of PCNet-M queries (default DEFAULT_TTA); ``review_json``:
    where to write the least-confident edges and completions (``amodalize.review``);
    ``min_amodal_confidence``: below it an object keeps its input mask (``writer.augment``).

    ``on_start(total images, already finished)`` and ``on_progress(images)`` report progress.
    Returns a summary (images, instances, edges, pairs, seconds, forwards, queries, warning).
    """
    start = time.perf_counter()
    check_settings(settings)
    method = method or "pcnet"
    learned, tta = learned_protocol(reference, tta)
    order = order or (learned if method == "pcnet" or checkpoint else "convex")
    needs_model = method == "pcnet" or order in ("pcnet", "fused")
    dataset = read_detections(input_json, images_from, min_score) if images_from else read_dataset(input_json, fmt)
    images = dataset.images if shard is None else dataset.images[shard[0] :: shard[1]]
    # a file of box-only (or empty) annotations is legal: it is written back with nothing completed
    nothing = not any(not i.iscrowd and rle_area(i.modal) for i in dataset.instances)
    needs_model = needs_model and not nothing
    completer, ckpt_info = load_completer(checkpoint, device, batch_size, tta=tta) if needs_model else (None, None)
    if nothing:
        opts, decided = ConvertOptions(method, order), {"source": NOTHING_TO_COMPLETE}
    else:
        opts, decided = resolve_options(dataset, method, order, settings, completer, ckpt_info, reference)
    meta = {
        "version": __version__,
        "method": opts.method,
        "order_method": opts.order,
        "settings": settings_record(opts),
        "decided": decided,
        "input": str(input_json),
        "input_sha256": file_sha256(input_json),
        "input_format": "detections" if images_from else dataset.format,
        "images_from": str(images_from) if images_from else None,
        "min_score": min_score if images_from else None,
        "checkpoint": ckpt_info,
        "min_amodal_confidence": min_amodal_confidence,
    }
    fingerprint = hashlib.sha256(json.dumps([meta, shard, flush_every], sort_keys=True).encode()).hexdigest()
    store = ChunkStore(parts_dir(output_json), fingerprint)
    results = store.load()
    todo = [image for image in images if image.id not in results]
    if on_start:
        on_start(len(images), len(images) - len(todo))
    for k in range(0, len(todo), flush_every):
        block = todo[k : k + flush_every]
        if nothing:
            done = {image.id: ImageResult(image.id) for image in block}
            if on_progress:
                on_progress(len(block))
        else:
            done = convert_dataset(dataset, opts, block, workers=workers, completer=completer, on_progress=on_progress)
        store.save(list(done.values()))
        results.update(done)

    part = subset(dataset, images) if shard else dataset
    meta["overlaps"] = overlap_counts(results.values())
    if shard:
        positions = {id(inst): n for n, inst in enumerate(dataset.instances)}
        meta["shard"] = {
            "index": shard[0],
            "count": shard[1],
            "images_total": len(dataset.images),
            "annotation_index": [positions[id(inst)] for inst in part.instances],
        }
    doc = augment(
        part,
        results,
        meta,
        compat_kins=compat == "kins",
        segmentation=segmentation,
        min_amodal_confidence=min_amodal_confidence,
    )
    write_json_atomic(output_json, doc)
    if review_json:
        write_json_atomic(review_json, review(doc))
    store.remove()
    summary = _summary(part, results, completer, opts, time.perf_counter() - start)
    summary["decided"] = decided
    summary["overlaps"] = meta["overlaps"]
    summary["clipped"] = [i.id for i in part.instances if i.clipped]
    unseen = unseen_categories(part, ckpt_info)
    if unseen:
        summary["categories_unseen"] = unseen
    if ckpt_info:
        shipped = ckpt_info["shipped_model"]
        summary["model"] = f"the shipped model {shipped!r}" if shipped else ckpt_info["path"]
    return summary


def overlap_counts(results: Iterable[ImageResult]) -> dict[str, int]:
    """Pairs of input masks drawn over each other, by kind (``infer.overlaps``), over ``results``."""
    counts = dict.fromkeys(KINDS, 0)
    for r in results:
        for kind, n in r.overlaps.items():
            counts[kind] += n
    return counts


def _summary(
    dataset: Dataset, results: dict, completer: Completer | None, opts: ConvertOptions, seconds: float
) -> dict:
    grown = sum(r.calibration[0] for r in results.values())
    visible = sum(r.calibration[1] for r in results.values())
    completed = sum(len(r.amodal) for r in results.values())
    summary = {
        "images": len(dataset.images),
        "instances": completed,
        "kept": sum(1 for i in dataset.instances if not i.iscrowd) - completed,
        "edges": sum(len(r.edges) for r in results.values()),
        "pairs": sum(r.pairs_tested for r in results.values()),
        "cyclic_images": sum(r.cyclic for r in results.values()),
        "seconds": seconds,
        "forwards": completer.forwards if completer else 0,
        "queries": completer.queries if completer else 0,
        "settings": {k: getattr(opts, k) for k in ("order_th", "amodal_th", "eraser_dilate", "gap")},
        "order": opts.order,
        "tta": completer.tta if completer else None,
    }
    if opts.method == "pcnet" and visible and grown / visible > CALIBRATION_LIMIT:
        summary["warning"] = (
            f"unoccluded objects grew {grown / visible:.2f}x on completion: the model looks badly calibrated "
            "(under-trained?); check the masks or raise --amodal-th"
        )
    return summary


def merge_files(parts: list[Path], output_json: Path) -> dict:
    """Join shard part files into one augmented file, as a single run would have written it."""
    docs = [load_json(p) for p in parts]
    doc = merge_parts(docs, parts)
    write_json_atomic(output_json, doc)
    return {"images": len(doc["images"]), "annotations": len(doc["annotations"]), "parts": len(parts)}
