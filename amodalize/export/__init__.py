"""Converted files in the formats annotation and training tools open: one module per target.

Each target module has ``export(converted, out_dir, options: ExportOptions) -> dict`` (what it
wrote, with ``files``) and ``summary(done) -> str`` (one line on it); TARGETS names them, so a new
format is one module and one entry here, and the CLI builds its choices from it. The annotation
tools' modules (RETURNS) also have ``read_back(path, like) -> restore.Returned``: what comes back
after people fixed the labels there, which ``restore.restore`` makes a converted file again.
"""

from __future__ import annotations

import importlib
import zipfile
from pathlib import Path
from types import ModuleType

TARGETS = ("labelstudio", "cvat", "yolo")
# The targets whose fixed labels come back (``amodalize import``).
RETURNS = ("labelstudio", "cvat")


def exporter(target: str) -> ModuleType:
    """The module that writes ``target`` (one of TARGETS)."""
    if target not in TARGETS:
        raise ValueError(f"unknown export target {target!r}; choose from {', '.join(TARGETS)}")
    return importlib.import_module(f"{__name__}.{target}")


def returned_from(path: Path) -> str:
    """Which tool's export ``path`` is: a JSON list of tasks is Label Studio's, a folder, a zip or
    a COCO document is CVAT's."""
    if path.is_dir() or zipfile.is_zipfile(path):
        return "cvat"
    with open(path, "rb") as f:
        start = f.read(4096).lstrip()
    return "labelstudio" if start.startswith(b"[") else "cvat"
