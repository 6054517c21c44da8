"""The Python API's predictor against `convert`, side by side in one run: seconds to decide the
settings once (``Amodalizer()`` from the model's own calibration, ``Amodalizer(sample=FILE)`` on the
file), then seconds per image for ``complete`` (one image a call) and ``complete_many`` (all at
once), beside ``convert_file`` on the same file (whole, and per image beyond deciding its
settings, which is what ``Amodalizer(sample=FILE)`` does).

    python scripts/bench_api.py FILE [FILE ...] [--rounds 2]

Each FILE is an annotation file (a per-image COCOA file, or COCO with many images); several are
read as one list of images. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from amodalize.api import Amodalizer, convert_file  # noqa: E402
from amodalize.data.formats import read_dataset  # noqa: E402
from amodalize.data.masks import decode_crop  # noqa: E402
from amodalize.data.writer import write_json_atomic  # noqa: E402


def masks_of(files: list[Path]) -> list[list]:
    """Every image's non-crowd visible masks (H x W bool), file by file."""
    images = []
    for path in files:
        dataset = read_dataset(path)
        for image in dataset.images:
            insts = [i for i in dataset.by_image[image.id] if not i.iscrowd]
            if insts:
                window = (0, 0, image.width, image.height)
                images.append([decode_crop(i.modal).within(window) for i in insts])
    return images


def as_coco(images: list[list], path: Path) -> Path:
    """The images' masks as one COCO file (what `convert` reads)."""
    from amodalize.api import images_dataset

    dataset = images_dataset(images)
    doc = {
        "images": [im.source for im in dataset.images],
        "annotations": [{**i.source, "bbox": i.bbox} for i in dataset.instances],
        "categories": dataset.categories,
    }
    write_json_atomic(path, doc)
    return path


def timed(call) -> tuple[float, object]:
    start = time.perf_counter()
    out = call()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    images = masks_of(args.files)
    tmp = Path(tempfile.mkdtemp())
    whole = as_coco(images, tmp / "all.json")
    rows: dict[str, list[float]] = {k: [] for k in ("convert", "decide", "decide_on_file")}
    rows.update(complete=[], complete_many=[])
    for _ in range(args.rounds):
        rows["convert"].append(timed(lambda: convert_file(whole, tmp / "out.json", workers=1))[0])
        seconds, model = timed(lambda: Amodalizer(device="cpu"))
        rows["decide"].append(seconds)
        rows["decide_on_file"].append(timed(lambda: Amodalizer(sample=whole, device="cpu"))[0])
        rows["complete"].append(timed(lambda m=model: [m.complete(masks) for masks in images])[0] / len(images))
        rows["complete_many"].append(timed(lambda m=model: m.complete_many(images))[0] / len(images))
    median = {k: round(statistics.median(v), 3) for k, v in rows.items()}
    n = len(images)
    report = {
        "images": n,
        "objects": sum(map(len, images)),
        "seconds": median,
        "convert_per_image": round(median["convert"] / n, 3),
        "convert_per_image_beyond_deciding": round((median["convert"] - median["decide_on_file"]) / n, 3),
        "complete_per_image": median["complete"],
        "complete_many_per_image": median["complete_many"],
        "rounds": args.rounds,
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
