"""Conversion speed with PCNet-M on this machine, every figure measured side by side in one run.

    python scripts/bench_convert.py [--checkpoint runs/cpu-small/checkpoint.pt] [--repeat 10] [--large]

1. The paper-size model (256 px, widen 2; random weights: speed and equality only) on the 5 COCOA
   demo images (repeated ``--repeat`` times; synth scenes where ../shared is absent): the default
   settings against the same code with every lever off (batch 1, a completion forward for every
   object, BatchNorm not folded, eager PyTorch instead of frozen TorchScript, no prefetching), each
   lever alone, and whether the outputs are identical.
2. The CPU default (a cpu-small checkpoint, or random widen 1 at 64 px): queries/s and images/s.
3. With ``--large``: one 4000x4000 image of ~300 instances (tiled synth scenes): seconds for the
   whole file conversion (read, decode, order, complete, encode, write).
With ``--startup`` instead: the fixed start-up of a default conversion (the shipped model, no
flags) on the 5 COCOA demo images, each round in a fresh process: loading the model and deciding
the settings (calibration, the fusion fit); with ``--against TREE`` the same in a checkout of
another version, alternating round by round, and the ratio.
With ``--host`` instead: the host work alone (the network replaced by a stub that costs nothing) on
COCO-sized procedural images, at 1, 2 and all-cores worker processes of one thread each: queries/s
for each, the serial path with the libraries' threads beside them, and whether the outputs are
identical across worker counts.
Prints one JSON document.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from amodalize.api import convert_file  # noqa: E402
from amodalize.data.formats import read_dataset  # noqa: E402
from amodalize.data.masks import Crop, encode_crop, rle_area, rle_bbox  # noqa: E402
from amodalize.data.synth import SynthOptions, make_dataset, make_scene  # noqa: E402
from amodalize.infer.batcher import Completer, default_batch_size  # noqa: E402
from amodalize.infer.hosts import convert_dataset  # noqa: E402
from amodalize.infer.settings import ConvertRequest, decide, load_completer  # noqa: E402

COCOA_DEMO = ROOT.parent / "shared" / "data" / "cocoa-demo"


def random_checkpoint(path: Path, widen: float, size: int) -> Path:
    """An amodalize checkpoint with random weights (no calibration: reference thresholds)."""
    from amodalize.models.unet import UNet

    torch.manual_seed(0)
    model = UNet(2, 2, widen=widen)
    torch.save({"model": model.state_dict(), "config": {"model": {"widen": widen}, "data": {"input_size": size}}}, path)
    return path


def repeated_input(folder: Path, repeat: int) -> Path:
    """The COCOA demo images (or 5 synth scenes) ``repeat`` times over, as one COCO file."""
    if (COCOA_DEMO / "1.json").is_file():
        sources = [read_dataset(COCOA_DEMO / f"{k}.json") for k in range(1, 6)]
    else:
        modal, _ = make_dataset(folder / "synth", 5, 7, SynthOptions())
        sources = [read_dataset(modal)]
    images, annotations = [], []
    for _ in range(repeat):
        for ds in sources:
            for image in ds.images:
                image_id = len(images) + 1
                images.append({"id": image_id, "width": image.width, "height": image.height})
                for inst in ds.by_image[image.id]:
                    annotations.append(
                        {"id": len(annotations) + 1, "image_id": image_id, "category_id": 1, "segmentation": inst.modal}
                    )
    path = folder / "input.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    return path


def large_image(folder: Path, size: int = 4000, tiles: int = 8, seed: int = 5) -> Path:
    """One ``size`` x ``size`` image tiled with synth scenes (~300 instances)."""
    side = size // tiles
    annotations = []
    for ty in range(tiles):
        for tx in range(tiles):
            _, visibles, _ = make_scene(np.random.default_rng([seed, ty, tx]), SynthOptions(width=side, height=side))
            for visible in visibles:
                rle = encode_crop(Crop(visible, tx * side, ty * side), size, size)
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": 1,
                        "category_id": 1,
                        "segmentation": rle,
                        "bbox": rle_bbox(rle),
                        "area": rle_area(rle),
                    }
                )
    path = folder / "large.json"
    path.write_text(json.dumps({"images": [{"id": 1, "width": size, "height": size}], "annotations": annotations}))
    return path


def timed(
    dataset, checkpoint: Path, *, batch: int | None, fold: bool, freeze: bool, prefetch: bool, skip: bool
) -> dict:
    """One conversion of ``dataset`` in this process with the given levers; results kept for comparing."""
    completer, info = load_completer(checkpoint, "cpu", batch, fold=fold, freeze=freeze)
    completer.prefetch = prefetch
    opts, _ = decide(ConvertRequest("pcnet", "pcnet", checkpoint), dataset, completer, info)
    opts = dataclasses.replace(opts, skip_unoccluded=skip)
    start = time.perf_counter()
    results = convert_dataset(dataset, opts, completer=completer)
    seconds = time.perf_counter() - start
    return {
        "seconds": round(seconds, 2),
        "queries": completer.queries,
        "queries_per_s": round(completer.queries / seconds, 2),
        "images_per_s": round(len(dataset.images) / seconds, 2),
        "batch_size": completer.batch_size,
        "_results": results,
    }


def same(a: dict, b: dict) -> bool:
    return all(a[k].amodal == b[k].amodal and a[k].edges == b[k].edges for k in a)


class StubCompleter(Completer):
    """The Completer with its forward replaced by two in-place numpy operations (P(fg) 0.9 on the
    visible mask and the eraser, 0.1 elsewhere), so that next to nothing but the host work is timed
    (a temporary-making ``np.where`` and a copy cost 8x as much per 256 px query, 332 against 42 µs:
    about a quarter of the serial path's time)."""

    def __init__(self, input_size: int) -> None:
        cpu = torch.device("cpu")
        super().__init__(torch.nn.Identity(), input_size, device=cpu, batch_size=default_batch_size(cpu, input_size))

    def _forward(self, modal: np.ndarray, eraser: np.ndarray, category: np.ndarray, out: np.ndarray) -> None:
        self.forwards += 1
        np.multiply(modal | eraser, np.float32(0.8), out=out)
        out += np.float32(0.1)


def host_bench(tmp: Path, images: int, size: int, chunk: int) -> dict:
    """Host work alone: queries/s of conversion with a stub network at 1, 2 and all-cores workers.

    Every process runs its libraries on one thread, so that a worker is one core: the serial path
    (one worker) otherwise spreads OpenCV's resizes and the stub's tensor ops over the cores too.
    ``serial_threaded`` is the serial path with the libraries' own threads, as a user runs it."""
    import cv2

    from amodalize.infer.convert import ConvertOptions

    opts = SynthOptions(width=640, height=480, min_objects=3, max_objects=12)
    modal, _ = make_dataset(tmp / "host", images, 17, opts)
    dataset = read_dataset(modal)
    convert_opts = ConvertOptions("pcnet", "pcnet", order_th=0.3, amodal_th=0.3)
    counts = sorted({1, 2, os.cpu_count() or 1})

    def timed(workers: int) -> tuple[float, dict, int]:
        completer = StubCompleter(size)
        start = time.perf_counter()
        results = convert_dataset(dataset, convert_opts, workers=workers, chunk_size=chunk, completer=completer)
        return round(completer.queries / (time.perf_counter() - start), 1), results, completer.queries

    warm = StubCompleter(size)
    convert_dataset(dataset, convert_opts, images=dataset.images[:chunk], completer=warm)  # first-call costs
    # the fork server that worker processes come from starts once per process: not timed
    convert_dataset(
        dataset, convert_opts, images=dataset.images[: 2 * chunk], workers=2, chunk_size=chunk, completer=warm
    )
    serial_threaded, _, _ = timed(1)
    threads, cv2_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        runs = {workers: timed(workers) for workers in counts}
    finally:
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv2_threads)
    per_workers = {str(w): rate for w, (rate, _, _) in runs.items()}
    first = runs[counts[0]][1]
    return {
        "images": images,
        "input_size": size,
        "queries": runs[counts[0]][2],
        "per_workers": per_workers,
        "serial_threaded": serial_threaded,
        "speedup_2_over_1": round(per_workers["2"] / per_workers["1"], 2) if "2" in per_workers else None,
        "identical": all(same(first, results) for _, results, _ in runs.values()),
    }


# One start-up, timed in a fresh process: the first call's costs are part of it.
STARTUP = """
import json, sys, time
from pathlib import Path
from amodalize.data.formats import read_dataset
from amodalize.infer.settings import ConvertRequest, decide, load_completer
dataset = read_dataset(Path(sys.argv[1]))
start = time.perf_counter()
completer, info = load_completer(None, "cpu")
loaded = time.perf_counter()
decide(ConvertRequest("pcnet", "fused"), dataset, completer, info)
print(json.dumps({"load": loaded - start, "settings": time.perf_counter() - loaded}))
"""


def startup_bench(tmp: Path, rounds: int, against: Path | None) -> dict:
    """Median seconds of loading the shipped model and deciding the settings for the 5 COCOA demo
    images, in a fresh process per round, for this checkout (and ``against``, alternating)."""
    source = repeated_input(tmp, 1)
    trees = {"this": ROOT, **({"against": against.resolve()} if against else {})}
    runs: dict[str, list[dict]] = {name: [] for name in trees}
    for _ in range(rounds):
        for name, tree in trees.items():
            env = {**os.environ, "PYTHONPATH": str(tree)}
            done = subprocess.run(
                [sys.executable, "-c", STARTUP, str(source)], cwd=tree, env=env, capture_output=True, text=True
            )
            if done.returncode:
                raise SystemExit(f"start-up run in {tree} failed: {done.stderr.strip().splitlines()[-1]}")
            runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    report = {"input_images": 5 if (COCOA_DEMO / "1.json").is_file() else "5 synth scenes", "rounds": rounds}
    for name, rows in runs.items():
        median = {k: round(statistics.median(r[k] for r in rows), 3) for k in ("load", "settings")}
        report[name] = {**median, "total": round(median["load"] + median["settings"], 3)}
    if against:
        report["this_over_against"] = round(report["this"]["total"] / report["against"]["total"], 3)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="CPU-default model (else random widen 1)")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--large", action="store_true", help="Also the 4000x4000 image.")
    parser.add_argument("--host", action="store_true", help="Only the host work, with a stub network.")
    parser.add_argument("--host-images", type=int, default=200, help="640x480 images for --host.")
    parser.add_argument("--host-size", type=int, default=256, help="Patch side for --host.")
    parser.add_argument("--host-chunk", type=int, default=16, help="Images per chunk for --host.")
    parser.add_argument("--startup", action="store_true", help="Only the fixed start-up, in fresh processes.")
    parser.add_argument("--rounds", type=int, default=5, help="Fresh processes per checkout for --startup.")
    parser.add_argument("--against", type=Path, default=None, help="Another checkout to time --startup in.")
    args = parser.parse_args()
    report: dict = {"threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
    if args.startup:
        with tempfile.TemporaryDirectory() as tmp:
            report["startup"] = startup_bench(Path(tmp), args.rounds, args.against)
        print(json.dumps(report, indent=1))
        return
    if args.host:
        with tempfile.TemporaryDirectory() as tmp:
            report["host"] = host_bench(Path(tmp), args.host_images, args.host_size, args.host_chunk)
        print(json.dumps(report, indent=1))
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        dataset = read_dataset(repeated_input(tmp, args.repeat))
        paper = random_checkpoint(tmp / "paper.pt", 2, 256)
        report["input"] = {"images": len(dataset.images), "instances": len(dataset.instances)}
        levers = {"batch": None, "fold": True, "freeze": True, "prefetch": True, "skip": True}
        off = {"batch": 1, "fold": False, "freeze": False, "prefetch": False, "skip": False}
        runs = {"all_off": timed(dataset, paper, **off), "default": timed(dataset, paper, **levers)}
        for name in ("skip", "fold", "freeze", "prefetch"):
            runs[f"only_{name}"] = timed(dataset, paper, **{**off, name: True})
        base = runs["all_off"]
        for name, r in runs.items():
            r["speedup_vs_all_off"] = round(base["seconds"] / r["seconds"], 2)
            r["identical_to_all_off"] = same(base["_results"], r.pop("_results")) if name != "all_off" else True
        base.pop("_results")
        report["paper_size"] = runs
        small = args.checkpoint or random_checkpoint(tmp / "small.pt", 1, 64)
        report["cpu_default"] = timed(dataset, small, **levers)
        report["cpu_default"].pop("_results")
        if args.large:  # the whole file conversion: read, decode, convert, encode, write
            summary = convert_file(large_image(tmp), tmp / "large-out.json", checkpoint=small, device="cpu")
            report["large_image"] = {
                "instances": summary["instances"],
                "seconds": round(summary["seconds"], 2),
                "queries": summary["queries"],
            }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
