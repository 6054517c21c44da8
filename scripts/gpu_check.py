"""One prepared run that exercises every CUDA path of amodalize and reports what it measured.

    python scripts/gpu_check.py OUT_DIR            # on a CUDA machine: at most ~8 minutes
    python scripts/gpu_check.py OUT_DIR --quick    # tiny sizes, any device (CPU in the tests)

Parts, each guarded (a failing part records its error and the others still run):
  train_m      PCNet-M at the paper's size (preset cocoa: 256 px, widen 2) on procedural scenes with
               the CUDA defaults (bf16 autocast, channels-last, DataLoader workers): samples/s,
               data-wait fraction, peak memory, loss falling
  torchrun     the same under torchrun --nproc_per_node 1 (nccl on CUDA), then --resume
  convert      paper-size and cpu-small checkpoints over held-out scenes at the CUDA default batch and
               at batch 1; order graph and masks compared with a CPU run of the same checkpoint
  convert_large  a COCO-sized split: >= 20,000 procedural 640x480 images (3-12 objects; 500 distinct
               ones repeated) through the default conversion for the paper-size and cpu-small models,
               host work in worker processes: queries/s, images/s, the share of wall time inside
               forward passes, and the minutes COCO train (118,287 images, ~7.3 instances each) would
               take at that rate; sized down to fit its time budget
  pcnet_c      PCNet-C at the reference size (preset pcnet_c/cocoa): samples/s, peak memory; then
               deocclude of a few rendered scenes on the device
  maskrcnn     Mask R-CNN r50-fpn: training steps and an amodal-AP evaluation, step time and memory
Prints one JSON document and writes it to OUT_DIR/gpu_check.json (rewritten after every part).
Without CUDA and without --quick it says so in one line and exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from amodalize.api import convert_file  # noqa: E402
from amodalize.config import ContentConfig, load_config  # noqa: E402
from amodalize.data.formats.common import load_json  # noqa: E402
from amodalize.data.masks import rle_area, rle_intersection_area  # noqa: E402
from amodalize.data.synth import SynthOptions, make_dataset  # noqa: E402
from amodalize.models.pcnet_m import load_pcnet_m  # noqa: E402

# Sizes of the full run (one recent GPU) and of --quick (any CPU, seconds).
FULL = {
    "scene_size": 256,
    "train_images": 300,
    "test_images": 200,
    "cpu_images": 30,
    "m_steps": 300,
    "m_batch": 256,
    "m_set": [],
    "calibration": 300,
    "ddp_steps": (20, 30),
    "ddp_batch": 64,
    "small_steps": 400,
    "c_steps": 30,
    "c_batch": 128,
    "c_set": [],
    "deocclude_images": 5,
    "mrcnn_steps": 40,
    "mrcnn_batch": 4,
    "large_distinct": 500,
    "large_images": 20000,
    "large_budget_s": 75,
}
QUICK = {
    "scene_size": 64,
    "train_images": 12,
    "test_images": 6,
    "cpu_images": 3,
    "m_steps": 3,
    "m_batch": 4,
    "m_set": ["model.widen=0.25", "data.input_size=32"],
    "calibration": 20,
    "ddp_steps": (2, 3),
    "ddp_batch": 4,
    "small_steps": 3,
    "c_steps": 2,
    "c_batch": 2,
    "c_set": ["model.base=8", "model.depth=3", "model.max_width=16", "model.disc_base=8", "data.input_size=32"],
    "deocclude_images": 2,
    "mrcnn_steps": 2,
    "mrcnn_batch": 1,
    "large_distinct": 3,
    "large_images": 12,
    "large_budget_s": 60,
}


PARTS = ("data", "train_m", "torchrun", "train_small", "convert", "convert_large", "pcnet_c", "maskrcnn")
# COCO train2017: images, and instances per image.
COCO_TRAIN_IMAGES = 118_287
COCO_INSTANCES_PER_IMAGE = 7.3


class Report:
    """The JSON document, rewritten to disk after every part so a killed run still leaves it."""

    def __init__(self, path: Path, doc: dict, wanted: set[str]) -> None:
        self.path, self.doc, self.wanted = path, doc, wanted

    def part(self, name: str, fn, *args) -> dict | None:
        """Run ``fn(*args) -> dict`` if ``name`` is wanted; record its figures or its error, and the
        seconds it took."""
        if name not in self.wanted:
            return None
        start = time.perf_counter()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        try:
            result = {"ok": True, **fn(*args)}
        except Exception as e:  # every part reports, whatever breaks
            result = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-2000:]}
        result["seconds"] = round(time.perf_counter() - start, 1)
        self.doc["parts"][name] = result
        self.path.write_text(json.dumps(self.doc, indent=1))
        print(
            f"[gpu_check] {name}: {'ok' if result['ok'] else result['error']} ({result['seconds']} s)", file=sys.stderr
        )
        return result if result["ok"] else None


def peak_gib() -> float | None:
    """Peak GPU memory allocated since the last reset, GiB (None on CPU)."""
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None


def steady(records: list[dict], key: str) -> float:
    """Mean of ``key`` over the second half of the records (start-up excluded)."""
    tail = records[len(records) // 2 :] or records
    return float(np.mean([r[key] for r in tail]))


def train_m(out: Path, data: Path, size: dict, device: str) -> dict:
    from amodalize.train.loop import train

    cfg = load_config(
        "cocoa",
        [
            *size["m_set"],
            f"run.calibration_samples={size['calibration']}",
            f"optim.iters={size['m_steps']}",
            f"optim.batch_size={size['m_batch']}",
            f"run.workers={min(12, max(0, (os.cpu_count() or 2) - 2)) if device == 'cuda' else 0}",
            "run.val_every=0",
            f"run.checkpoint_every={size['m_steps']}",
            f"run.val_samples={min(256, 4 * size['m_batch'])}",
            "run.log_every=1",
        ],
    )
    records: list[dict] = []
    start = time.perf_counter()
    metrics = train(cfg, [data], out / "run-m", device=device, on_step=records.append)
    seconds = time.perf_counter() - start
    losses = [r["loss"] for r in records]
    k = max(1, len(losses) // 10)
    return {
        "config": "cocoa (256 px, widen 2)" if not size["m_set"] else "cocoa, shrunk for --quick",
        "steps": len(records),
        "batch": cfg.optim.batch_size,
        "workers": cfg.run.workers,
        "amp_bf16": cfg.run.amp and device == "cuda",
        "channels_last": cfg.run.channels_last and device == "cuda",
        "samples_per_s": round(cfg.optim.batch_size / steady(records, "step_s"), 1),
        "data_wait_fraction": round(steady(records, "data_s") / steady(records, "step_s"), 3),
        "peak_gib": peak_gib(),
        "loss_first": round(float(np.mean(losses[:k])), 4),
        "loss_last": round(float(np.mean(losses[-k:])), 4),
        "loss_falling": bool(np.mean(losses[-k:]) < np.mean(losses[:k])),
        "val": {key: round(v, 4) for key, v in metrics.items() if isinstance(v, float)},
        "gap": metrics["gap"],
        "calibration": metrics["calibration"],
        "wall_s": round(seconds, 1),
    }


def torchrun(out: Path, data: Path, size: dict, device: str) -> dict:
    run = out / "run-ddp"
    first, second = size["ddp_steps"]
    common = ["--config", "cocoa", "--out", run, "--batch-size", size["ddp_batch"], "--device", device]
    common += [
        a
        for s in [*size["m_set"], "run.val_every=0", "run.val_samples=16", "run.workers=2", "run.calibration_samples=0"]
        for a in ("--set", s)
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
    times = []
    for extra in (["--iters", first], ["--iters", second, "--resume"]):
        start = time.perf_counter()
        done = subprocess.run(
            [*launch, "-m", "amodalize", "train", data, *map(str, common + extra)],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        times.append(round(time.perf_counter() - start, 1))
        if done.returncode:
            raise RuntimeError(f"torchrun exited {done.returncode}: {done.stderr[-1500:]}")
    env_records = [r["env"] for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if "env" in r]
    ckpt = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    loaded = load_pcnet_m(run / "checkpoint.pt")
    return {
        "backend": [e["backend"] for e in env_records],
        "processes": [e["processes"] for e in env_records],
        "steps": ckpt["step"],
        "resumed_to": second,
        "checkpoint_loads": loaded.kind == "amodalize" and loaded.input_size == ckpt["config"]["data"]["input_size"],
        "wall_s": times,
    }


def train_small(out: Path, data: Path, size: dict, device: str) -> Path:
    """A cpu-small PCNet-M (for the conversion and de-occlusion parts)."""
    from amodalize.train.loop import train

    overrides = [
        f"optim.iters={size['small_steps']}",
        "run.val_every=0",
        "run.val_samples=32",
        f"run.calibration_samples={size['calibration']}",
    ]
    train(load_config("cpu-small", overrides), [data], out / "run-small", device=device)
    return out / "run-small" / "checkpoint.pt"


def compare_outputs(a: Path, b: Path) -> dict:
    """How far two conversions of the same input differ: order edges and pooled mask IoU."""
    da, db = load_json(a), load_json(b)
    edges = [{(p["image_id"], p["occluder_id"], p["occludee_id"]) for p in d["occlusion_pairs"]} for d in (da, db)]
    inter = union = differing = 0
    for x, y in zip(da["annotations"], db["annotations"]):
        i = rle_intersection_area(x["segmentation"], y["segmentation"])
        u = rle_area(x["segmentation"]) + rle_area(y["segmentation"]) - i
        inter, union, differing = inter + i, union + u, differing + (i != u)
    return {
        "edges": [len(e) for e in edges],
        "edges_only_in_first": len(edges[0] - edges[1]),
        "edges_only_in_second": len(edges[1] - edges[0]),
        "order_identical": edges[0] == edges[1],
        "mask_iou": round(inter / union, 6) if union else 1.0,
        "instances_differing": differing,
        "instances": len(da["annotations"]),
    }


def subset_file(src: Path, dst: Path, n: int) -> Path:
    """The first ``n`` images of a COCO file and their annotations."""
    doc = load_json(src)
    ids = {im["id"] for im in doc["images"][:n]}
    doc["images"] = doc["images"][:n]
    doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] in ids]
    dst.write_text(json.dumps(doc))
    return dst


def convert_part(out: Path, test: Path, ckpts: dict[str, Path], size: dict, device: str) -> dict:
    small_test = subset_file(test, out / "test-subset.json", size["cpu_images"])
    result: dict = {
        "tf32_conv": torch.backends.cudnn.allow_tf32,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
    }
    for name, ckpt in ckpts.items():
        runs = {}
        for label, batch in (("default", None), ("batch1", 1)):
            target = out / f"conv-{name}-{label}.json"
            s = convert_file(test, target, checkpoint=ckpt, device=device, batch_size=batch)
            runs[label] = {
                "queries_per_s": round(s["queries"] / s["seconds"], 1),
                "images_per_s": round(s["images"] / s["seconds"], 2),
                "queries": s["queries"],
                "forwards": s["forwards"],
                "seconds": round(s["seconds"], 2),
            }
        runs["speedup_over_batch1"] = round(runs["batch1"]["seconds"] / runs["default"]["seconds"], 2)
        runs["default_vs_batch1"] = compare_outputs(out / f"conv-{name}-default.json", out / f"conv-{name}-batch1.json")
        # The same checkpoint on the CPU, on the images the CPU can afford, against the device run on them.
        dev_sub, cpu_sub = out / f"conv-{name}-dev-subset.json", out / f"conv-{name}-cpu-subset.json"
        convert_file(small_test, dev_sub, checkpoint=ckpt, device=device)
        s = convert_file(small_test, cpu_sub, checkpoint=ckpt, device="cpu")
        runs["cpu"] = {"images": s["images"], "queries_per_s": round(s["queries"] / s["seconds"], 1)}
        runs["device_vs_cpu"] = compare_outputs(dev_sub, cpu_sub)
        result[name] = runs
    result["images"] = len(load_json(test)["images"])
    return result


def repeated(dataset, times: int):
    """``dataset``'s images and instances ``times`` over, with fresh ids (the same work per copy)."""
    import dataclasses

    from amodalize.data.records import Dataset

    images, instances = [], []
    for _ in range(times):
        for image in dataset.images:
            new_id = len(images) + 1
            images.append(dataclasses.replace(image, id=new_id, source={**image.source, "id": new_id}))
            for inst in dataset.by_image[image.id]:
                instances.append(dataclasses.replace(inst, id=len(instances) + 1, image_id=new_id))
    return Dataset(dataset.path, dataset.format, images, instances, dataset.categories)


def convert_large_part(out: Path, ckpts: dict[str, Path], size: dict, device: str) -> dict:
    from amodalize.data.formats import read_dataset
    from amodalize.infer.hosts import convert_dataset
    from amodalize.infer.settings import ConvertRequest, decide, load_completer

    opts = SynthOptions(width=640, height=480, min_objects=3, max_objects=12)
    modal, _ = make_dataset(out / "large-distinct", size["large_distinct"], 4242, opts)
    distinct = read_dataset(modal)
    result: dict = {"distinct_images": len(distinct.images)}
    for name, ckpt in ckpts.items():
        completer, info = load_completer(ckpt, device)
        settings, _ = decide(ConvertRequest("pcnet", "fused", ckpt), distinct, completer, info)
        start = time.perf_counter()  # one pass over the distinct images: warm-up and rate probe
        convert_dataset(distinct, settings, completer=completer)
        probe = time.perf_counter() - start
        wanted = size["large_images"] // len(distinct.images)
        fits = max(1, int(size["large_budget_s"] / max(probe, 1e-3)))
        dataset = repeated(distinct, min(wanted, fits))
        completer.queries, completer.forward_s = 0, 0.0
        start = time.perf_counter()
        convert_dataset(dataset, settings, completer=completer)
        wall = time.perf_counter() - start
        queries_per_instance = completer.queries / len(dataset.instances)
        rate = completer.queries / wall
        result[name] = {
            "images": len(dataset.images),
            "instances": len(dataset.instances),
            "queries": completer.queries,
            "queries_per_s": round(rate, 1),
            "images_per_s": round(len(dataset.images) / wall, 1),
            "gpu_busy_fraction": round(completer.forward_s / wall, 3),
            "projected_coco_train_min": round(
                COCO_TRAIN_IMAGES * COCO_INSTANCES_PER_IMAGE * queries_per_instance / rate / 60, 1
            ),
            "batch_size": completer.batch_size,
            "tta": completer.tta,
            "sized_down": min(wanted, fits) < wanted,
            "seconds": round(wall, 1),
        }
    return result


def pcnet_c_part(out: Path, train_dir: Path, test_dir: Path, small: Path | None, size: dict, device: str) -> dict:
    from amodalize.infer.settings import ConvertRequest
    from amodalize.scene.deocclude import deocclude_file
    from amodalize.train.content import train_content

    cfg = load_config(
        "pcnet_c/cocoa",
        [
            *size["c_set"],
            f"optim.iters={size['c_steps']}",
            f"optim.batch_size={size['c_batch']}",
            f"run.workers={min(12, max(0, (os.cpu_count() or 2) - 2)) if device == 'cuda' else 0}",
            "run.val_every=0",
            f"run.checkpoint_every={size['c_steps']}",
            f"run.val_samples={min(64, 2 * size['c_batch'])}",
            "run.log_every=1",
        ],
        ContentConfig,
    )
    records: list[dict] = []
    metrics = train_content(
        cfg, [train_dir / "modal.json"], train_dir / "images", out / "run-c", device=device, on_step=records.append
    )
    params = sum(
        p.numel() for p in torch.load(out / "run-c" / "checkpoint.pt", weights_only=True)["generator"].values()
    )
    train_peak = peak_gib()
    ids = list(range(1, size["deocclude_images"] + 1))
    start = time.perf_counter()
    if small is not None:
        summary = deocclude_file(
            test_dir / "modal.json", test_dir / "images", out / "layers", out / "run-c" / "checkpoint.pt",
            masks=ConvertRequest("pcnet", "pcnet", small), image_ids=ids, device=device,
        )  # fmt: skip
    else:  # no PCNet-M from the conversion part: the file's own amodal masks
        summary = deocclude_file(
            test_dir / "gt.json", test_dir / "images", out / "layers", out / "run-c" / "checkpoint.pt",
            image_ids=ids, device=device,
        )  # fmt: skip
    return {
        "config": "pcnet_c/cocoa (256 px, 7 levels)" if not size["c_set"] else "pcnet_c/cocoa, shrunk for --quick",
        "generator_parameters": params,
        "steps": len(records),
        "batch": cfg.optim.batch_size,
        "samples_per_s": round(cfg.optim.batch_size / steady(records, "step_s"), 1),
        "data_wait_fraction": round(steady(records, "data_s") / steady(records, "step_s"), 3),
        "peak_gib": train_peak,
        "hole_l1": {k: round(v, 2) for k, v in metrics.items()},
        "deocclude": {
            "images": summary["images"],
            "objects": summary["objects"],
            "painted": summary["painted"],
            "masks": "pcnet-m" if small else "gt",
            "seconds": round(time.perf_counter() - start, 2),
        },
    }


def maskrcnn_part(out: Path, train_dir: Path, test_dir: Path, size: dict, device: str) -> dict:
    from amodalize.check.maskrcnn import MaskRCNNConfig, evaluate_run, train

    cfg = MaskRCNNConfig(
        arch="r50-fpn",
        image_size=size["scene_size"],
        iters=size["mrcnn_steps"],
        batch_size=size["mrcnn_batch"],
        warmup=max(1, size["mrcnn_steps"] // 4),
        checkpoint_every=size["mrcnn_steps"],
    )
    records: list[dict] = []
    train(cfg, train_dir / "gt.json", train_dir / "images", out / "run-mrcnn", device=device, on_step=records.append)
    train_peak = peak_gib()
    start = time.perf_counter()
    metrics = evaluate_run(out / "run-mrcnn", test_dir / "gt.json", test_dir / "images", device)
    return {
        "steps": len(records),
        "batch": cfg.batch_size,
        "image_size": cfg.image_size,
        "step_s": round(steady(records, "step_s"), 4),
        "peak_gib": train_peak,
        "loss_first": round(records[0]["loss"], 3),
        "loss_last": round(records[-1]["loss"], 3),
        "evaluate_s": round(time.perf_counter() - start, 2),
        "evaluate_images": len(load_json(test_dir / "gt.json")["images"]),
        "ap": {k: round(v, 4) for k, v in metrics.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="Folder for the runs and gpu_check.json.")
    parser.add_argument("--quick", action="store_true", help="Tiny sizes and a few steps, on any device.")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"Comma-separated subset of {','.join(PARTS)}.")
    args = parser.parse_args()
    wanted = set(args.parts.split(","))
    if not wanted <= set(PARTS):
        parser.error(f"unknown part in --parts {args.parts!r}; choose from {','.join(PARTS)}")
    cuda = torch.cuda.is_available()
    if not cuda and not args.quick:
        print(
            "gpu_check: no CUDA GPU here; run on a CUDA machine, or with --quick for the CPU smoke run", file=sys.stderr
        )
        return 1
    device = "cuda" if cuda else "cpu"
    size = QUICK if args.quick else FULL
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    doc = {
        "quick": args.quick,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cpu_count": os.cpu_count(),
        "parts": {},
    }
    report = Report(out / "gpu_check.json", doc, wanted)

    def scenes() -> dict:
        train_opts = SynthOptions(width=size["scene_size"], height=size["scene_size"], render=True)
        make_dataset(out / "synth-train", size["train_images"], 100, train_opts)
        make_dataset(out / "synth-test", size["test_images"], 999, train_opts)
        return {"train_images": size["train_images"], "test_images": size["test_images"], "side": size["scene_size"]}

    train_dir, test_dir = out / "synth-train", out / "synth-test"
    report.part("data", scenes)
    train_data = train_dir / "modal.json"
    report.part("train_m", train_m, out, train_data, size, device)
    report.part("torchrun", torchrun, out, train_data, size, device)

    ckpts = {}
    if (out / "run-m" / "checkpoint.pt").exists():
        ckpts["paper"] = out / "run-m" / "checkpoint.pt"
    small = report.part("train_small", lambda: {"checkpoint": str(train_small(out, train_data, size, device))})
    if small:
        ckpts["small"] = Path(small["checkpoint"])
    report.part("convert", convert_part, out, test_dir / "modal.json", ckpts, size, device)
    report.part("convert_large", convert_large_part, out, ckpts, size, device)
    report.part("pcnet_c", pcnet_c_part, out, train_dir, test_dir, ckpts.get("small"), size, device)
    report.part("maskrcnn", maskrcnn_part, out, train_dir, test_dir, size, device)

    doc["seconds"] = round(time.perf_counter() - started, 1)
    doc["ok"] = all(p["ok"] for p in doc["parts"].values())
    report.path.write_text(json.dumps(doc, indent=1))
    print(json.dumps(doc, indent=1))
    return 0 if doc["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
