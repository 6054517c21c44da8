"""``amodalize import``: labels fixed in Label Studio or CVAT back into an augmented COCO file."""

from __future__ import annotations

from pathlib import Path

from amodalize.check.changes import changes
from amodalize.data.formats.common import load_json
from amodalize.data.writer import write_json_atomic
from amodalize.export import RETURNS, exporter, returned_from
from amodalize.export.restore import restore


def import_file(
    exported: Path,
    output_json: Path,
    *,
    like: Path | None = None,
    tool: str | None = None,
    changes_json: Path | None = None,
) -> dict:
    """Write ``output_json`` from ``exported`` (a Label Studio JSON export, or CVAT's COCO 1.0
    export of our CVAT file; ``tool`` names which, else it is told from the file) with ``like``,
    the converted file it was exported from (required for CVAT). Returns counts of what came back
    (``restore``) and what people changed (``check.changes``), also written to ``changes_json``."""
    tool = tool or returned_from(exported)
    if tool not in RETURNS:
        raise ValueError(f"nothing comes back from {tool!r}; choose from {', '.join(RETURNS)}")
    base = load_json(like) if like is not None else None
    returned = exporter(tool).read_back(exported, base)
    doc, counts = restore(returned, exported)
    done = changes(returned.base, doc)
    write_json_atomic(output_json, doc)
    if changes_json is not None:
        write_json_atomic(changes_json, done)
    return {"tool": tool, "counts": counts, "changes": done}
