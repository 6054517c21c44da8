"""Are the defaults right without ground truth? `convert` with no tuning flags against the best
hand-tuned setting found with ground truth, and against the Convex / Convex^R heuristics.

    python scripts/bench_defaults.py --checkpoint run/checkpoint.pt \
        --set clean=demo/synth-test/modal.json:demo/synth-test/gt.json \
        --set cocoa=../shared/data/cocoa-demo/1.json:../shared/data/cocoa-demo/1.json,...
    python scripts/bench_defaults.py --checkpoint general --standard build/sets --no-search
    python scripts/bench_defaults.py --checkpoint general --standard build/sets-coco --categories coco --no-search

A set is NAME=INPUT:GT[,INPUT:GT...] (several files are pooled). ``--standard DIR`` adds the sets
docs/measurements.md's tables are measured on, made in DIR on the first run (STANDARD_SETS; the COCOA ones where
the demo images are found). Synth ground truth is scored with its annotated order (masks with gaps
do not touch), other files with the order derived from the masks (the reference protocol). The
hand-tuned setting is found by coordinate search over the eraser dilation, then the ordering
threshold, then the completion threshold (twice round), maximising ordering accuracy + pooled IoU.
Beside the sets, ``all`` pools every set's pairs and confidences per conversion setting. Prints
one JSON document.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from amodalize.api import convert_file  # noqa: E402
from amodalize.check.evaluate import edge_reliability, evaluate, iou_reliability  # noqa: E402
from amodalize.data.formats import read_dataset  # noqa: E402
from amodalize.data.masks import rle_area  # noqa: E402
from amodalize.data.synth import CATEGORY_SETS, SynthOptions, categories_of, make_dataset, shapes_from  # noqa: E402
from amodalize.data.writer import write_json_atomic  # noqa: E402

ORDER = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
AMODAL = (0.2, 0.3, 0.35, 0.4, 0.5, 0.6)
DILATE = (0, 1, 2, 3, 4, 5, 6, 8)
COCOA_DEMO = Path(os.environ.get("AMODALIZE_COCOA_DEMO") or ROOT.parent / "shared" / "data" / "cocoa-demo")
# The standard sets: (images, seed, options) of procedural scenes, as `amodalize synth` makes them;
# `shapes` layers the COCOA demo's 48 real amodal shapes instead (and `cocoa` is those 5 images).
STANDARD_SETS = {
    "clean": (100, 999, SynthOptions()),
    "gap1": (100, 998, SynthOptions(gap=1)),
    "gap2": (100, 997, SynthOptions(gap=2)),
    "convex": (
        150,
        4444,
        SynthOptions(320, 320, min_objects=3, max_objects=8, polygon=1.0, kinds=("ellipse", "convex", "rounded_box")),
    ),
    "shapes": (150, 4242, SynthOptions(320, 320, min_objects=3, max_objects=7)),
}


def standard_sets(folder: Path, categories: str = "one") -> dict[str, list[tuple[Path, Path]]]:
    """The STANDARD_SETS as (input, GT) files, made in ``folder`` unless already there: the COCOA
    demo images and the scenes of their shapes only where the demo is found. ``categories``: the
    objects' category ids (``synth.CATEGORY_SETS``); other than 'one', the COCOA images are given
    as plain COCO files of their visible masks with ids drawn from that set."""
    demo = [COCOA_DEMO / f"{k}.json" for k in range(1, 6)]
    found = all(p.is_file() for p in demo)
    sets = {}
    for name, (images, seed, opts) in STANDARD_SETS.items():
        if name == "shapes" and not found:
            continue
        if not (folder / name / "gt.json").is_file():
            shapes = shapes_from([read_dataset(p) for p in demo], opts.width, opts.height) if name == "shapes" else None
            make_dataset(folder / name, images, seed, dataclasses.replace(opts, categories=categories), shapes)
        sets[name] = [(folder / name / "modal.json", folder / name / "gt.json")]
    if found and categories == "one":
        sets["cocoa"] = [(p, p) for p in demo]
    elif found:
        sets["cocoa"] = [
            (modal_with_categories(p, folder / "cocoa", categories, seed=k), p) for k, p in enumerate(demo)
        ]
    return sets


def modal_with_categories(path: Path, folder: Path, categories: str, seed: int) -> Path:
    """A plain COCO file of ``path``'s visible masks (same image and annotation ids), each object's
    category drawn from ``CATEGORY_SETS[categories]``; written into ``folder``."""
    dataset = read_dataset(path)
    ids = CATEGORY_SETS[categories]
    drawn = np.random.default_rng(seed).choice(ids, len(dataset.instances))
    doc = {
        "images": [
            {"id": im.id, "width": im.width, "height": im.height, "file_name": im.file_name} for im in dataset.images
        ],
        "annotations": [
            {
                "id": inst.id,
                "image_id": inst.image_id,
                "category_id": int(c),
                "iscrowd": 0,
                "segmentation": inst.modal,
                "bbox": inst.bbox,
                "area": rle_area(inst.modal),
            }
            for inst, c in zip(dataset.instances, drawn)
        ],
        "categories": categories_of(ids),
    }
    out = folder / path.name
    write_json_atomic(out, doc)
    return out


def score(files: list[tuple[Path, Path]], tmp: Path, **settings: object) -> dict:
    """Pooled ordering accuracy and IoU of one conversion setting over ``files``, the reliability
    of its confidences where it gives them, and (``samples``) what they were computed from."""
    correct = pairs = inter = union = occluded_iou = occluded = 0
    decided = None
    judged, estimated = [], []
    buckets = {}  # hidden-share bucket -> [objects, Σ IoU, Σ missing share, Σ extra share]
    for k, (src, gt_path) in enumerate(files):
        out = tmp / f"out{k}.json"
        convert_file(src, out, **settings)
        gt = read_dataset(gt_path)
        annotated = gt.format == "coco_amodal" and all(i.occluded_by is not None for i in gt.instances)
        m = evaluate(read_dataset(out, "coco_amodal"), gt, "annotated" if annotated else "masks", samples=True)
        judged += m["samples"]["edges"]
        estimated += m["samples"]["amodal"]
        correct, pairs = correct + m["order_correct"], pairs + m["order_pairs"]
        inter, union = inter + m["sum_intersection"], union + m["sum_union"]
        occluded_iou += (m["miou_occluded"] or 0.0) * m["occluded_instances"]
        occluded += m["occluded_instances"]
        for b in m["by_hidden_share"]:
            n = b["instances"]
            sums = (n, n * (b["miou"] or 0), n * (b["missing"] or 0), n * (b["extra"] or 0))
            buckets[b["bin"]] = [x + y for x, y in zip(buckets.get(b["bin"], [0] * 4), sums)]
        decided = decided or json.loads(out.read_text())["info"]["amodalize"]
    return {
        **totals(correct, pairs, inter, union, occluded_iou, occluded, judged, estimated),
        "by_hidden_share": hidden_rows(buckets),
        "settings": {k: decided["settings"][k] for k in ("order_th", "amodal_th", "eraser_dilate", "gap")},
        "decided": decided.get("decided"),
        "samples": {
            "buckets": buckets,
            "counts": [correct, pairs, inter, union, occluded_iou, occluded],
            "edges": judged,
            "amodal": estimated,
        },
    }


def hidden_rows(buckets: dict[str, list[float]]) -> dict:
    """Per hidden-share bucket of the occluded objects: objects, mean IoU, mean missing and extra
    area (percent of the true area), from the sums ``[objects, Σ IoU, Σ missing, Σ extra share]``."""
    return {
        name: {key: round(100 * v / n, 2) if n else None for key, v in zip(("miou", "missing", "extra"), sums)}
        | {"instances": n}
        for name, (n, *sums) in buckets.items()
    }


def totals(
    correct: int,
    pairs: int,
    inter: float,
    union: float,
    occluded_iou: float,
    occluded: int,
    judged: list,
    estimated: list,
) -> dict:
    """Ordering accuracy, pooled IoU and the mean IoU of occluded objects (percent), and the
    confidences' reliability, from the counts (``occluded_iou``: the sum of the occluded objects' IoUs)."""
    return {
        "order_acc": round(100 * correct / max(pairs, 1), 2),
        "pooled_iou": round(100 * inter / max(union, 1), 2),
        "miou_occluded": round(100 * occluded_iou / max(occluded, 1), 2),
        "pairs": pairs,
        "edge_confidence": edge_reliability(judged) if judged else None,
        "amodal_confidence": iou_reliability(estimated) if estimated else None,
    }


def pooled(rows: dict[str, dict]) -> dict:
    """Every set's pairs and confidences pooled, per conversion setting scored on every set."""
    out = {}
    first = next(iter(rows.values()))
    for label in [k for k in first if k != "seconds" and all(k in row for row in rows.values())]:
        parts = [row[label]["samples"] for row in rows.values()]
        counts = [sum(p["counts"][k] for p in parts) for k in range(len(parts[0]["counts"]))]
        edges = [e for p in parts for e in p["edges"]]
        out[label] = totals(*counts, edges, [a for p in parts for a in p["amodal"]])
        buckets: dict[str, list[float]] = {}
        for part in parts:
            for name, sums in part["buckets"].items():
                buckets[name] = [x + y for x, y in zip(buckets.get(name, [0] * 4), sums)]
        out[label]["by_hidden_share"] = hidden_rows(buckets)
    return out


def hand_tuned(files: list[tuple[Path, Path]], tmp: Path, checkpoint: Path) -> dict:
    """The best setting coordinate search finds with ground truth (accuracy + IoU)."""
    best = {"order_th": 0.3, "amodal_th": 0.35, "eraser_dilate": 0}
    tried: dict = {}

    def total(setting: dict) -> float:
        key = tuple(sorted(setting.items()))
        if key not in tried:
            tried[key] = score(files, tmp, checkpoint=checkpoint, **setting)
        return tried[key]["order_acc"] + tried[key]["pooled_iou"]

    for _ in range(2):
        for name, grid in (("eraser_dilate", DILATE), ("order_th", ORDER), ("amodal_th", AMODAL)):
            best[name] = max(grid, key=lambda v, n=name: total({**best, n: v}))
    result = tried[tuple(sorted(best.items()))]
    return {**result, "best_order_acc": max(r["order_acc"] for r in tried.values()), "tried": len(tried)}


def _value(text: str) -> object:
    """A variant's setting: a number or true/false where it reads as one, else the text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="NAME=INPUT:GT[,...]")
    parser.add_argument("--no-search", action="store_true", help="Skip the hand-tuned search.")
    parser.add_argument(
        "--variant",
        dest="variants",
        action="append",
        default=[],
        metavar="NAME=KEY:VALUE[,KEY:VALUE...]",
        help="Also score convert with these settings (e.g. single=tta:none,order:pcnet); repeatable.",
    )
    parser.add_argument("--brief", action="store_true", help="Leave the decisions out of the report.")
    parser.add_argument(
        "--standard", type=Path, metavar="DIR", help="Also score the standard sets, made in DIR on the first run."
    )
    parser.add_argument(
        "--categories",
        choices=sorted(CATEGORY_SETS),
        default="one",
        help="Category ids of the standard sets' objects (the scenes and masks are the same for each).",
    )
    args = parser.parse_args()
    if not args.sets and not args.standard:
        parser.error("give --set or --standard")
    sets = standard_sets(args.standard, args.categories) if args.standard else {}
    for item in args.sets:
        name, _, spec = item.partition("=")
        sets[name] = [tuple(Path(p) for p in pair.split(":")) for pair in spec.split(",")]
    report = {"checkpoint": str(args.checkpoint), "sets": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, files in sets.items():
            start = time.perf_counter()
            row = {
                "defaults": score(files, Path(tmp), checkpoint=args.checkpoint),
                "convex_r": score(files, Path(tmp), method="convex-r", order="convex"),
            }
            for variant in args.variants:
                label, _, pairs = variant.partition("=")
                extra = {k: _value(v) for k, v in (pair.split(":", 1) for pair in pairs.split(","))}
                row[label] = score(files, Path(tmp), checkpoint=args.checkpoint, **extra)
            if args.brief:
                for result in row.values():
                    result.pop("decided", None)
            if not args.no_search:
                row["hand_tuned"] = hand_tuned(files, Path(tmp), args.checkpoint)
            row["seconds"] = round(time.perf_counter() - start, 1)
            report["sets"][name] = row
            print(f"{name}: {json.dumps(without_samples(row))}", file=sys.stderr)
    report["all"] = pooled(report["sets"])
    report["sets"] = {name: without_samples(row) for name, row in report["sets"].items()}
    print(json.dumps(report, indent=1))


def without_samples(row: dict) -> dict:
    """``row`` without the samples behind its figures (kept only to pool the sets)."""
    return {k: {f: v for f, v in r.items() if f != "samples"} if isinstance(r, dict) else r for k, r in row.items()}


if __name__ == "__main__":
    main()
