"""Readers of modal and amodal annotation files, with format autodetection.

Every reader turns its file into a Dataset (data/records.py) whose masks are compressed RLEs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from amodalize.data.formats import coco, cocoa
from amodalize.data.formats.common import load_json
from amodalize.data.records import Dataset
from amodalize.errors import InputError

# name -> (detect(doc) -> confidence, read(doc, path) -> Dataset)
READERS: dict[str, tuple[Callable[[object], int], Callable[[dict, Path], Dataset]]] = {
    "coco": (lambda d: coco.detect(d, coco.COCO), lambda d, p: coco.read(d, p, coco.COCO)),
    "coco_amodal": (
        lambda d: coco.detect(d, coco.COCO_AMODAL),
        lambda d, p: coco.read(d, p, coco.COCO_AMODAL),
    ),
    "kins": (
        lambda d: max(coco.detect(d, coco.KINS), coco.detect(d, coco.KINS_2020)),
        lambda d, p: coco.read(d, p, coco.KINS if coco.detect(d, coco.KINS) else coco.KINS_2020),
    ),
    "cocoa": (cocoa.detect, cocoa.read),
}
FORMATS = tuple(READERS)


def detect_format(doc: dict, path: Path) -> str:
    """The name of the one reader most confident about ``doc``; an error when none or several."""
    scores = {name: detect(doc) for name, (detect, _) in READERS.items()}
    best = max(scores.values())
    if best == 0:
        missing = [k for k in ("images", "annotations") if k not in doc]
        what = f"missing {' and '.join(repr(k) for k in missing)}" if missing else "no known annotation layout"
        raise InputError(path, f"not a COCO, COCOA or KINS file ({what})")
    winners = [name for name, score in scores.items() if score == best]
    if len(winners) > 1:
        raise InputError(path, f"matches several formats ({', '.join(winners)}); pick one with --format")
    return winners[0]


def read_dataset(path: str | Path, format: str | None = None) -> Dataset:
    """Read an annotation file, autodetecting its format unless ``format`` names one."""
    path = Path(path)
    return parse_dataset(load_json(path), path, format)


def parse_dataset(doc: object, path: Path, format: str | None = None) -> Dataset:
    """The dataset of an annotation file's parsed JSON ``doc`` (read from ``path``), as ``read_dataset``."""
    if not isinstance(doc, dict):
        kind = type(doc).__name__
        raise InputError(path, f"top level is a {kind}, expected an object with 'images' and 'annotations'")
    name = format or detect_format(doc, path)
    dataset = READERS[name][1](doc, path)
    if not dataset.images:
        raise InputError(path, "the dataset has no images")
    return dataset
