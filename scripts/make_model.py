"""Rebuild the shipped general-purpose PCNet-M (``make model``): procedural scenes of varied shapes,
sizes, object counts and annotation gaps, their outlines drawn as polygons as annotators click them;
``amodalize train`` with the ``general`` preset (cpu-small with 1-3 erasers per sample, 3,000 steps);
the weights and a card written into amodalize/models/weights/.

    python scripts/make_model.py [--out build/model] [--iters 3000]
    python scripts/make_model.py --recalibrate      # the shipped weights as they are, calibrations anew

The model is calibrated at every gap of GAPS with the completer `convert` runs (thresholds and
eraser dilation; at gap 0 also the ordering fusion and IoU model fitted on its training shapes, for
a predictor given no data: `convert` fits them on each input's own shapes), so that an input at
any of those gaps needs no calibration of its own. Seeded throughout: on the same machine
the weights file is identical from run to run. An interrupted run continues where it stopped (the
training resumes from its checkpoint).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from amodalize.config import TrainConfig, load_config, to_dict  # noqa: E402
from amodalize.data.bank import build_bank  # noqa: E402
from amodalize.data.formats import read_dataset  # noqa: E402
from amodalize.data.synth import SynthOptions, make_dataset  # noqa: E402
from amodalize.infer.calibrate import calibrate, fit_fusion, fusion_scenes  # noqa: E402
from amodalize.infer.convert import ConvertOptions  # noqa: E402
from amodalize.infer.settings import load_completer  # noqa: E402
from amodalize.models.registry import DEFAULT_MODEL, WEIGHTS, file_sha256  # noqa: E402
from amodalize.train.loop import CHECKPOINT, train  # noqa: E402
from amodalize.train.partial import split_instances  # noqa: E402
from amodalize.version import __version__  # noqa: E402

# The training data: (name, images, seed, SynthOptions). Touching masks and masks 2 and 4 pixels
# apart, small and large scenes, few and many objects.
RECIPE = [
    ("touching", 300, 200, SynthOptions()),
    ("gap1", 300, 201, SynthOptions(gap=1)),
    ("gap2", 300, 202, SynthOptions(gap=2)),
    ("small-few", 300, 203, SynthOptions(width=160, height=160, min_objects=2, max_objects=4)),
    ("large-many", 150, 204, SynthOptions(width=384, height=384, min_objects=6, max_objects=12, gap=1)),
]
# Real annotations are clicked polygons: shapes redrawn as polygons within POLYGON_PX pixels ordered
# the real COCOA images better and the other sets within 2 pairs (docs/measurements.md, "A stronger shape prior").
POLYGON_PX = 2.0
PRESET = "general"
# Gaps between neighbouring masks (px, as `convert` measures them) the shipped model is calibrated at.
GAPS = range(7)


def calibrate_gaps(weights: Path, paths: list[Path], cfg: TrainConfig) -> list[dict]:
    """Calibration records of the model in ``weights`` at every gap of GAPS, on synthetic occlusions
    of its held-out training instances, run by the completer `convert` uses (its test-time
    augmentation included)."""
    bank = build_bank([read_dataset(p) for p in paths])
    train_ids, val_ids = split_instances(bank, cfg.data, cfg.run.seed)
    completer, _ = load_completer(weights, "cpu")
    records = []
    for gap in GAPS:
        data = dataclasses.replace(cfg.data, gap=float(gap))
        found = calibrate(
            bank, val_ids, train_ids, data, gap, completer, cfg.run.seed, cfg.run.calibration_samples, fusion=False
        )
        records.append(found.to_json())
    return records


def model_fusion(weights: Path, paths: list[Path], record: dict) -> dict:
    """``record`` (a calibration at gap 0) with the ordering fusion and IoU model fitted at its
    thresholds on layered scenes of the training shapes: what a predictor given no data of its own
    uses (``convert`` fits them on each input's own shapes, measured better: docs/measurements.md)."""
    bank = build_bank([read_dataset(p) for p in paths])
    completer, _ = load_completer(weights, "cpu")
    chosen = ConvertOptions(
        "pcnet", "fused", order_th=record["order_th"], amodal_th=record["amodal_th"], eraser_dilate=0, gap=0
    )
    fitted = fit_fusion(bank, 0, completer, chosen, n=fusion_scenes(bank, record["samples"]))
    return {**record, "fusion": fitted[0], "iou_model": fitted[1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "model", help="Data and training run.")
    parser.add_argument("--iters", type=int, default=3000, help="Training steps of 32 samples.")
    parser.add_argument("--name", default=DEFAULT_MODEL, help="Name of the shipped model.")
    parser.add_argument(
        "--polygon", type=float, default=POLYGON_PX, help="SynthOptions.polygon for every set (px; 0: smooth outlines)."
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="Extra config override.")
    parser.add_argument(
        "--recalibrate", action="store_true", help="Keep the shipped weights; only calibrate them anew at GAPS."
    )
    parser.add_argument(
        "--fusion-only",
        action="store_true",
        help="Keep the shipped weights and calibrations; only fit the model's own fusion at gap 0 anew.",
    )
    args = parser.parse_args()
    start = time.perf_counter()
    paths = []
    recipe = [(n, i, s, dataclasses.replace(o, polygon=args.polygon)) for n, i, s, o in RECIPE]
    for name, images, seed, opts in recipe:
        modal, _ = make_dataset(args.out / "data" / name, images, seed, opts)
        paths.append(modal)
    cfg = load_config(PRESET, [f"optim.iters={args.iters}"] + args.overrides)
    weights, card_path = WEIGHTS / f"{args.name}.pt", WEIGHTS / f"{args.name}.json"
    keep = args.recalibrate or args.fusion_only
    if keep:
        shipped, card = torch.load(weights, weights_only=True), json.loads(card_path.read_text())
    else:
        shipped, card = trained(cfg, paths, args.out / "run", args.name, recipe)
    source = weights if keep else args.out / "run" / CHECKPOINT
    if args.fusion_only:
        records = [shipped["calibration"], *shipped["gap_calibrations"]]
    else:
        records = calibrate_gaps(source, paths, cfg)
    records = [model_fusion(source, paths, r) if r["gap"] == 0 else r for r in records]
    shipped["calibration"] = next(r for r in records if r["gap"] == shipped["gap"]["gap"])
    shipped["gap_calibrations"] = [r for r in records if r["gap"] != shipped["gap"]["gap"]]
    WEIGHTS.mkdir(exist_ok=True)
    torch.save(shipped, weights)
    card.update(
        sha256=file_sha256(weights),
        calibration=shipped["calibration"],
        gap_calibrations=shipped["gap_calibrations"],
    )
    card_path.write_text(json.dumps(card, indent=1) + "\n")
    print(
        json.dumps({"weights": str(weights), "sha256": card["sha256"], "seconds": round(time.perf_counter() - start)})
    )


def trained(cfg: TrainConfig, paths: list[Path], run: Path, name: str, recipe: list) -> tuple[dict, dict]:
    """The shipped checkpoint and its card from a training run (resumed or skipped when done)."""
    ckpt_path = run / CHECKPOINT
    previous = torch.load(ckpt_path, weights_only=True) if ckpt_path.exists() else {}
    if previous.get("step", 0) < cfg.optim.iters or previous.get("calibration") is None:
        train(cfg, paths, run, resume=bool(previous), device="cpu")
    ckpt = torch.load(ckpt_path, weights_only=True)
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    keep = ("model", "config", "step", "data_fingerprint", "gap", "calibration", "categories_seen")
    shipped = {k: ckpt[k] for k in keep}
    card = {
        "name": name,
        "file": f"{name}.pt",
        "kind": "pcnet-m",
        "parameters": sum(v.numel() for k, v in ckpt["model"].items() if "running" not in k and "num_batches" not in k),
        "input_size": ckpt["config"]["data"]["input_size"],
        "config": to_dict(cfg),
        "steps": ckpt["step"],
        "gap": ckpt["gap"],
        "validation": [r["val"] for r in records if "val" in r][-1],
        "recipe": {
            "command": "make model (scripts/make_model.py)",
            "synth": [{"name": n, "images": i, "seed": s, **o.__dict__} for n, i, s, o in recipe],
        },
        "built_with": {"amodalize": __version__, "torch": torch.__version__},
    }
    return shipped, card


if __name__ == "__main__":
    main()
