"""Masks drawn over each other, as COCO annotators draw them: ordering and completion of the same
scenes given as a partition (visible masks) and drawn with overlapping outlines (``synth
--outlines``), each pair scored by the kind of overlap its drawn masks have.

    python scripts/bench_overlaps.py --out build/overlaps [--checkpoint general] [--sets proc11,real21]

Sets (made in OUT on the first run): procedural scenes and scenes of the COCOA demo's real shapes
(where ../shared is found), 100 images each, every seed drawn as a partition and with the
outline shares listed in SETS. For each: `convert` with no flags, `evaluate`'s ordering accuracy
and occluded mIoU, how many input masks lie inside their amodal mask, and per kind of pair
(none, nested, overlapping, sliver): the GT-occluded pairs, how many are ordered right (drawn and
partition), how often the inner mask is in front, and the mean edge confidence. Prints one JSON
document.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from amodalize.api import convert_file  # noqa: E402
from amodalize.check.evaluate import evaluate, gt_order_from_masks  # noqa: E402
from amodalize.data.formats import read_dataset  # noqa: E402
from amodalize.data.masks import decode_crop  # noqa: E402
from amodalize.data.synth import SynthOptions, make_dataset, shapes_from  # noqa: E402
from amodalize.infer.overlaps import find_overlaps  # noqa: E402

COCOA_DEMO = Path(os.environ.get("AMODALIZE_COCOA_DEMO") or ROOT.parent / "shared" / "data" / "cocoa-demo")
# name: (seed, outline shares nested/through/sliver, scenes of the COCOA demo's shapes)
SETS = {
    "proc11": (11, (0.3, 0.3, 0.3), False),
    "proc12": (12, (0.2, 0.2, 0.4), False),
    "proc13": (13, (0.5, 0.1, 0.3), False),
    "real21": (21, (0.3, 0.3, 0.3), True),
    "real22": (22, (0.2, 0.1, 0.5), True),
    "real23": (23, (0.5, 0.1, 0.3), True),
    "real24": (24, (0.3, 0.0, 0.4), True),
}
KINDS = ("none", "nested", "overlapping", "sliver")


def make(folder: Path, seed: int, outlines: tuple, real: bool) -> tuple[Path, Path]:
    """The set's files, made unless already there."""
    size = 320 if real else 256
    if not (folder / "gt.json").is_file():
        demo = [read_dataset(COCOA_DEMO / f"{k}.json") for k in range(1, 6)]
        shapes = shapes_from(demo, size, size) if real else None
        make_dataset(folder, 100, seed, SynthOptions(size, size, outlines=outlines), shapes)
    return folder / "modal.json", folder / "gt.json"


def edges(path: Path) -> dict[tuple[int, int], float]:
    """(occluder, occludee) -> confidence (0.5 where none) of a converted file."""
    pairs = json.loads(path.read_text())["occlusion_pairs"]
    return {(p["occluder_id"], p["occludee_id"]): p.get("confidence", 0.5) for p in pairs}


def by_kind(drawn: Path, gt: Path, converted: dict[str, Path]) -> dict:
    """Per kind of overlap of the drawn masks: GT-occluded pairs, right per conversion, inner in
    front, and the drawn conversion's mean confidence on its edges of that kind."""
    truth_ds, drawn_by_image = read_dataset(gt), read_dataset(drawn).by_image
    predicted = {name: edges(path) for name, path in converted.items()}
    tally: dict = defaultdict(lambda: defaultdict(float))
    confidence = defaultdict(list)
    for image, insts in truth_ds.by_image.items():
        live = [i for i in insts if not i.iscrowd]
        masks = {i.id: i.modal for i in drawn_by_image[image]}
        kinds = {(o.i, o.j): o for o in find_overlaps([decode_crop(masks[i.id]) for i in live])}
        for (i, j), sign in gt_order_from_masks(live).items():
            if not sign:
                continue
            front, back = (live[i].id, live[j].id) if sign == 1 else (live[j].id, live[i].id)
            o = kinds.get((i, j))
            kind = o.kind if o else "none"
            tally[kind]["pairs"] += 1
            for name, found in predicted.items():
                tally[kind][name] += (front, back) in found
            if o:
                tally[kind]["inner_in_front"] += live[o.inner].id == front
            found = predicted["drawn"]
            if (front, back) in found or (back, front) in found:
                confidence[kind].append(found.get((front, back), found.get((back, front))))
    out = {}
    for kind in (k for k in KINDS if tally[k]["pairs"]):
        out[kind] = {k: int(v) for k, v in tally[kind].items()}
        out[kind]["mean_confidence"] = round(float(np.mean(confidence[kind])), 3) if confidence[kind] else None
    return out


def drawn_inside(drawn: Path, converted: Path) -> float:
    """Share of the input masks that lie wholly inside their amodal mask."""
    source = {i.id: decode_crop(i.modal) for i in read_dataset(drawn).instances}
    inside = 0
    for inst in read_dataset(converted).instances:
        mask, amodal = source[inst.id], decode_crop(inst.amodal)
        inside += not np.any(mask.within(mask.window) & ~amodal.within(mask.window))
    return inside / len(source)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "overlaps")
    parser.add_argument("--checkpoint", default=None, help="PCNet-M checkpoint (default: the shipped model)")
    parser.add_argument("--sets", default=",".join(SETS), help="Comma-separated names from SETS.")
    args = parser.parse_args()
    report = {}
    for name in args.sets.split(","):
        seed, outlines, real = SETS[name]
        if real and not (COCOA_DEMO / "5.json").is_file():
            continue
        files = {"partition": make(args.out / f"{name}-partition", seed, (0.0, 0.0, 0.0), real)}
        files["drawn"] = make(args.out / f"{name}-drawn", seed, outlines, real)
        converted, row = {}, {"outlines": outlines}
        for style, (modal, gt) in files.items():
            converted[style] = args.out / f"{name}-{style}.converted.json"
            summary = convert_file(modal, converted[style], checkpoint=args.checkpoint)
            scores = evaluate(read_dataset(converted[style]), read_dataset(gt))
            row[style] = {
                "order_acc": round(100 * scores["order_acc"], 2),
                "miou_occluded": round(100 * scores["miou_occluded"], 2),
                "input_inside_amodal": round(drawn_inside(modal, converted[style]), 4),
                "overlaps": summary["overlaps"],
                "seconds": round(summary["seconds"], 2),
            }
        row["by_kind"] = by_kind(files["drawn"][0], files["drawn"][1], converted)
        report[name] = row
        print(f"{name}: {json.dumps({k: row[k] for k in ('partition', 'drawn')})}", file=sys.stderr)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
