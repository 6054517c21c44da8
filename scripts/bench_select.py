"""Does `train`'s self-check keep the model the ground truth prefers? On each standard set, the
default CPU run (the shipped model fine-tuned on the set's own masks) picks between the fine-tuned
model and the shipped one on synthetic occlusions; both are then scored against the set's ground
truth with `convert`'s defaults (ordering accuracy + pooled IoU, as the self-check adds them).

    python scripts/bench_select.py --standard build/sets --runs build/select

Prints one JSON document: per set, the self-check's scores and choice, the ground truth's scores
of both models (with the occluded objects' mean IoU) and whether the two agree.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from amodalize.train.loop import CHECKPOINT, TRAINED_CHECKPOINT  # noqa: E402
from scripts.bench_defaults import score, standard_sets  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--standard", type=Path, required=True, help="The standard sets (made here if missing).")
    parser.add_argument("--runs", type=Path, required=True, help="Where the training runs go (reused when done).")
    parser.add_argument("--sets", default=None, help="Comma-separated set names (default: all).")
    args = parser.parse_args()
    sets = standard_sets(args.standard)
    chosen = args.sets.split(",") if args.sets else list(sets)
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in chosen:
            run = args.runs / name
            if not (run / CHECKPOINT).is_file():
                inputs = [str(src) for src, _ in sets[name]]
                command = [sys.executable, "-m", "amodalize", "train", *inputs, "--out", str(run)]
                subprocess.run(command, check=True, capture_output=True)
            selection = torch.load(run / CHECKPOINT, weights_only=True)["selection"]
            tuned = run / (TRAINED_CHECKPOINT if selection["kept"] == "start" else CHECKPOINT)
            truth = {}
            for label, checkpoint in (("trained", tuned), ("start", "general")):
                s = score(sets[name], Path(tmp), checkpoint=checkpoint)
                truth[label] = {k: s[k] for k in ("order_acc", "pooled_iou", "miou_occluded")}
            total = {k: v["order_acc"] + v["pooled_iou"] for k, v in truth.items()}
            better = "start" if total["start"] > total["trained"] else "trained"
            report[name] = {
                "self_check": selection,
                "ground_truth": truth,
                "ground_truth_prefers": better,
                "agree": better == selection["kept"],
                "difference": round(total["trained"] - total["start"], 2),
            }
            print(f"{name}: {json.dumps(report[name])}", file=sys.stderr)
    report = {"sets": report, "agree": sum(r["agree"] for r in report.values()), "of": len(report)}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
