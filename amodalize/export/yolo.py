"""YOLO segmentation labels (the Ultralytics layout): ``labels/<image stem>.txt`` with one line
per object, ``class x1 y1 x2 y2 ...`` in [0, 1], and ``data.yaml`` naming the classes (its train
and val both point at the one folder of images, as its first lines say: one file is one split).

Written here: Ultralytics' own ``convert_coco`` reads compressed RLE only through an extra package
and is no dependency of amodalize; the line format is a few numbers (tests/test_interop.py reads
the labels back with Ultralytics' own label checker).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import yaml

from amodalize.data.writer import write_text_atomic
from amodalize.errors import InputError
from amodalize.export.common import DEFAULTS, ExportObject, ExportOptions, category_names, read_converted


def largest(polygons: list[list[float]]) -> list[float]:
    """The polygon of largest area (YOLO holds one outline per object line)."""

    def area(p: list[float]) -> float:
        xs, ys = p[::2], p[1::2]
        return abs(sum(xs[k] * ys[k - 1] - xs[k - 1] * ys[k] for k in range(len(xs)))) / 2

    return max(polygons, key=area)


def label_line(obj: ExportObject, index: int, width: int, height: int) -> str:
    """One object's label line: its class index and its amodal outline's largest part, normalised."""
    polygon = largest(obj.amodal)
    coords = [min(max(v / (width if k % 2 == 0 else height), 0.0), 1.0) for k, v in enumerate(polygon)]
    return " ".join([str(index)] + [f"{v:.6f}" for v in coords])


def export(converted: Path, out_dir: Path, options: ExportOptions = DEFAULTS) -> dict:
    """Write ``out_dir/labels/*.txt`` and ``out_dir/data.yaml``; with ``options.images_dir``, each
    image is linked (else copied) into ``out_dir/images`` where Ultralytics looks for it. Returns counts."""
    images, categories = read_converted(converted)
    names = category_names(categories, images)
    index = {category: k for k, category in enumerate(names)}
    lines = 0
    for image in images:
        file_name = image.image.get("file_name") or f"{image.image['id']}.jpg"
        width, height = image.image["width"], image.image["height"]
        rows = [
            label_line(obj, index[obj.annotation.get("category_id", 1)], width, height)
            for obj in image.objects
            if obj.amodal
        ]
        write_text_atomic(out_dir / "labels" / (Path(file_name).stem + ".txt"), "".join(r + "\n" for r in rows))
        lines += len(rows)
        if options.images_dir is not None:
            link_image(options.images_dir / file_name, out_dir / "images" / Path(file_name).name)
    data = {
        "path": str(out_dir.resolve()),
        "train": "images",
        "val": "images",
        "names": {k: names[c] for c, k in index.items()},
    }
    note = (
        "# amodalize export of one file: train and val both point at images/ (no split is made here);\n"
        "# move some images and their labels to a folder of their own for a held-out val before training.\n"
    )
    write_text_atomic(out_dir / "data.yaml", note + yaml.safe_dump(data, sort_keys=False))
    return {"images": len(images), "lines": lines, "classes": len(index), "files": [str(out_dir / "data.yaml")]}


def summary(done: dict) -> str:
    """One line on what ``export`` wrote."""
    return f"{done['lines']} objects in {done['images']} label files, {done['classes']} classes"


def link_image(source: Path, target: Path) -> None:
    """``target`` as a symbolic link to ``source`` (a copy where links cannot be made)."""
    if not source.is_file():
        raise InputError(source, "no such image file (give the folder that holds the images with --images-dir)")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    try:
        os.symlink(source.resolve(), target)
    except OSError:
        shutil.copy2(source, target)
