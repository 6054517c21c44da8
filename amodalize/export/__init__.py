"""Converted files in the formats annotation and training tools open: one module per target.

Each target module has ``export(converted, out_dir, options: ExportOptions) -> dict`` (what it
wrote, with ``files``) and ``summary(done) -> str`` (one line on it); TARGETS names them, so a new
format is one module and one entry here, and the CLI builds its choices from it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

TARGETS = ("labelstudio", "cvat", "yolo")


def exporter(target: str) -> ModuleType:
    """The module that writes ``target`` (one of TARGETS)."""
    if target not in TARGETS:
        raise ValueError(f"unknown export target {target!r}; choose from {', '.join(TARGETS)}")
    return importlib.import_module(f"{__name__}.{target}")
