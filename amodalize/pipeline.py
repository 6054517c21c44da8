"""File-level conversion: read, load PCNet-M if asked, convert in resumable chunks, write.

Finished chunks are flushed to ``OUT.json.parts/`` and skipped by a rerun with the same input and
settings; the final file is written atomically and the parts removed. ``shard=(K, N)`` converts
images ``K, K+N, K+2N, ...`` into a part file that ``merge_files`` joins with the others.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from amodalize.check.review import review
from amodalize.data.formats import read_dataset
from amodalize.data.formats.common import load_json
from amodalize.data.formats.detections import read_detections
from amodalize.data.masks import rle_area
from amodalize.data.records import Dataset, ImageResult
from amodalize.data.writer import augment, merge_parts, write_json_atomic
from amodalize.infer.batcher import Completer
from amodalize.infer.convert import ConvertOptions
from amodalize.infer.hosts import convert_dataset
from amodalize.infer.overlaps import KINDS
from amodalize.infer.settings import ConvertRequest, decide, load_completer, settings_record
from amodalize.models.registry import file_sha256
from amodalize.version import __version__

# Completed/visible area of instances with nothing in front above this means a badly calibrated model.
CALIBRATION_LIMIT = 1.3
# What a file none of whose annotations has a visible mask records as the source of its settings.
NOTHING_TO_COMPLETE = "nothing to complete: no annotation has a visible mask"


def unseen_categories(dataset: Dataset, ckpt_info: dict | None) -> list[int]:
    """Category ids of ``dataset`` that a model taking categories ('multiply') never saw in training
    (none for a model that ignores them, or whose training ids are not recorded)."""
    if not ckpt_info or ckpt_info["categories"] != "multiply" or ckpt_info["categories_seen"] is None:
        return []
    return sorted({i.category_id for i in dataset.instances} - set(ckpt_info["categories_seen"]))


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


def convert_file(
    input_json: Path,
    output_json: Path,
    request: ConvertRequest | None = None,
    *,
    fmt: str | None = None,
    compat: str | None = None,
    segmentation: str = "rle",
    workers: int = -1,
    batch_size: int | None = None,
    device: str = "auto",
    shard: tuple[int, int] | None = None,
    images_from: Path | None = None,
    min_score: float = 0.0,
    review_json: Path | None = None,
    min_amodal_confidence: float = 0.0,
    flush_every: int = 256,
    on_start: Callable[[int, int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> dict:
    """Convert one annotation file as ``request`` asks (default: ``ConvertRequest()``), its settings
    decided on the file by ``infer.settings.decide``; ``segmentation``: amodal masks as 'rle' or
    'polygon' (``writer.augment``); ``review_json``: where to write the least-confident edges and
    completions (``amodalize.check.review``); ``min_amodal_confidence``: below it an object keeps its
    input mask (``writer.augment``).

    ``on_start(total images, already finished)`` and ``on_progress(images)`` report progress.
    Returns a summary (images, instances, edges, pairs, seconds, forwards, queries, warning).
    """
    start = time.perf_counter()
    request = request or ConvertRequest()
    if images_from is None:
        dataset = read_dataset(input_json, fmt)
    else:
        dataset = read_detections(input_json, images_from, min_score)
    images = dataset.images if shard is None else dataset.images[shard[0] :: shard[1]]
    # a file of box-only (or empty) annotations is legal: it is written back with nothing completed
    nothing = not any(not i.iscrowd and rle_area(i.modal) for i in dataset.instances)
    completer, ckpt_info = None, None
    if request.needs_model and not nothing:
        completer, ckpt_info = load_completer(request.checkpoint, device, batch_size, tta=request.tta_mode)
    if nothing:
        opts, decided = ConvertOptions(request.method, request.order_method), {"source": NOTHING_TO_COMPLETE}
    else:
        opts, decided = decide(request, dataset, completer, ckpt_info)
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

    part = dataset.subset(images) if shard else dataset
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


# The keyword options of ``convert_file`` besides the request's (file, device and progress ones).
FILE_OPTIONS = frozenset(inspect.signature(convert_file).parameters) - {"input_json", "output_json", "request"}


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
