"""File-level conversion: read a dataset, load PCNet-M if asked, convert, write the augmented file.

This is what ``amodalize convert`` calls; it owns provenance (``info.amodalize``) and the summary.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import torch

from amodalize import __version__
from amodalize.convert import ConvertOptions, convert_dataset
from amodalize.data.formats import read_dataset
from amodalize.data.writer import augment, write_json_atomic
from amodalize.errors import AmodalizeError
from amodalize.infer.batcher import Completer
from amodalize.models.pcnet_m import load_pcnet_m

# Completed/visible area of instances with nothing in front above this means a badly calibrated model.
CALIBRATION_LIMIT = 1.3
DEFAULT_BATCH = {"cpu": 64, "cuda": 256}


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_completer(checkpoint: Path, device: str = "auto", batch_size: int | None = None) -> tuple[Completer, dict]:
    """A Completer for a PCNet-M checkpoint and its provenance record."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise AmodalizeError("--device cuda was asked for, but no CUDA GPU is available")
    model, input_size, kind = load_pcnet_m(checkpoint)
    dev = torch.device(device)
    completer = Completer(model, input_size, device=dev, batch_size=batch_size or DEFAULT_BATCH[dev.type], amp=False)
    info = {"path": str(checkpoint), "sha256": sha256(checkpoint), "kind": kind, "input_size": input_size}
    return completer, info


def convert_file(
    input_json: Path,
    output_json: Path,
    *,
    checkpoint: Path | None = None,
    method: str | None = None,
    order: str | None = None,
    fmt: str | None = None,
    compat: str | None = None,
    workers: int = -1,
    batch_size: int | None = None,
    device: str = "auto",
    on_start: Callable[[int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    **settings: object,
) -> dict:
    """Convert one annotation file; ``settings`` are further ConvertOptions fields. Returns a summary."""
    start = time.perf_counter()
    method = method or ("pcnet" if checkpoint else "convex-r")
    order = order or ("pcnet" if checkpoint else "convex")
    opts = ConvertOptions(method=method, order=order, **settings)
    if opts.needs_model and checkpoint is None:
        raise AmodalizeError("--method/--order pcnet needs a PCNet-M --checkpoint (train one with `amodalize train`)")
    dataset = read_dataset(input_json, fmt)
    completer, ckpt_info = load_completer(checkpoint, device, batch_size) if opts.needs_model else (None, None)
    if on_start:
        on_start(len(dataset.images))
    results = convert_dataset(dataset, opts, workers=workers, completer=completer, on_progress=on_progress)
    meta = {
        "version": __version__,
        "method": opts.method,
        "order_method": opts.order,
        "settings": {k: v for k, v in opts.__dict__.items() if k not in ("method", "order")},
        "input": str(input_json),
        "input_format": dataset.format,
        "checkpoint": ckpt_info,
    }
    write_json_atomic(output_json, augment(dataset, results, meta, compat_kins=compat == "kins"))
    grown = sum(r.calibration[0] for r in results.values())
    visible = sum(r.calibration[1] for r in results.values())
    summary = {
        "images": len(dataset.images),
        "instances": sum(1 for i in dataset.instances if not i.iscrowd),
        "edges": sum(len(r.edges) for r in results.values()),
        "pairs": sum(r.pairs_tested for r in results.values()),
        "seconds": time.perf_counter() - start,
        "forwards": completer.forwards if completer else 0,
        "queries": completer.queries if completer else 0,
    }
    if opts.method == "pcnet" and visible and grown / visible > CALIBRATION_LIMIT:
        summary["warning"] = (
            f"unoccluded objects grew {grown / visible:.2f}x on completion: the model looks badly calibrated "
            "(under-trained?); check the masks or raise --amodal-th"
        )
    return summary
