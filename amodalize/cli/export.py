"""`amodalize export`: a converted file in the formats annotation and training tools open; and
`amodalize import`: the labels people fixed in Label Studio or CVAT, back as a converted file."""

from __future__ import annotations

from pathlib import Path

import click

from amodalize.cli.options import EXISTING_FILE, OUT_DIR, OUT_FILE, console, images_dir_option
from amodalize.export import RETURNS, TARGETS
from amodalize.export.common import LOCAL_FILES


@click.command()
@click.argument("converted_json", type=EXISTING_FILE)
@click.option("--to", "target", type=click.Choice(TARGETS), required=True, help="The format to write.")
@click.argument("out_dir", type=OUT_DIR)
@images_dir_option("YOLO: link the images from here into OUT_DIR/images, where Ultralytics looks for them.")
@click.option(
    "--image-root",
    default=LOCAL_FILES,
    show_default=True,
    help="Label Studio: put before each file_name to make the task's image URL (by default Label Studio's "
    "local files from the subfolder images/ of its document root: see docs/roundtrip.md; e.g. an https:// "
    "or s3:// prefix).",
)
def export(converted_json: Path, target: str, out_dir: Path, images_dir: Path | None, image_root: str) -> None:
    """Write CONVERTED_JSON (an `amodalize convert` output) for another tool into OUT_DIR.

    \b
    labelstudio: tasks.json (one task per image; each object's amodal and visible outlines as
        polygon predictions, each order edge as an 'occludes' relation, amodal_confidence as the
        region's score) and labeling_config.xml to paste into the project's settings.
    cvat: annotations/instances_default.json (zip OUT_DIR, import as COCO 1.0): amodal outlines as
        polygons with the occluders, amodal_confidence and occlude_rate as attributes, visible
        outlines under '<category> (visible)' labels.
    yolo: labels/*.txt (one line per object: its class and amodal outline) and data.yaml, as
        Ultralytics' segmentation trainer reads them.

    Examples:

    \b
        amodalize export val_amodal.json --to labelstudio ls/
        amodalize export val_amodal.json --to cvat cvat/ && (cd cvat && zip -r ../cvat.zip .)
        amodalize export val_amodal.json --to yolo yolo/ --images-dir val2017/
    """
    from amodalize.export import exporter
    from amodalize.export.common import ExportOptions

    target_module = exporter(target)
    done = target_module.export(converted_json, out_dir, ExportOptions(images_dir, image_root))
    console.print(f"wrote {', '.join(done['files'])}: {target_module.summary(done)}", soft_wrap=True)


@click.command("import")
@click.argument("exported", type=click.Path(exists=True, path_type=Path))
@click.argument("output_json", type=OUT_FILE)
@click.option(
    "--like",
    type=EXISTING_FILE,
    default=None,
    help="The converted file the export was made from. CVAT: required (it renumbers images and keeps no "
    "other field). Label Studio: optional (tasks carry their image's annotations; this restores the file's "
    "categories and info as they were).",
)
@click.option(
    "--from",
    "tool",
    type=click.Choice(RETURNS),
    default=None,
    help="Which tool's export EXPORTED is [default: told from the file: a JSON list of tasks is Label "
    "Studio's; a zip, folder or COCO file CVAT's].",
)
@click.option(
    "--changes",
    "changes_json",
    type=OUT_FILE,
    default=None,
    help="Also write what people changed (edges reversed, removed, added; objects edited with their IoU, "
    "deleted; how many fell in the least-sure share that --review lists) to this JSON file.",
)
def import_(exported: Path, output_json: Path, like: Path | None, tool: str | None, changes_json: Path | None) -> None:
    """Write the labels fixed in Label Studio or CVAT (EXPORTED) as OUTPUT_JSON, as `convert` writes.

    Label Studio: its JSON export of the tasks `export --to labelstudio` wrote (each task's latest
    submitted annotation, else its prediction). CVAT: its COCO 1.0 export (zip) of the file
    `export --to cvat` wrote. Objects nobody touched keep every field; edited ones get masks from
    their outlines and checked: true; the order comes from the relations (CVAT: occluded_by).
    Examples:

    \b
        amodalize import project-1-at-2026-12-07.json fixed.json
        amodalize import cvat-task.zip fixed.json --like val_amodal.json
    """
    from amodalize.check.changes import changes_line
    from amodalize.export.roundtrip import import_file

    done = import_file(exported, output_json, like=like, tool=tool, changes_json=changes_json)
    counts = done["counts"]
    console.print(
        f"wrote {output_json} from {done['tool']}: {counts.get('images', 0)} images came back "
        f"({counts.get('images_by_person', 0)} submitted by a person), {counts.get('images_not_returned', 0)} "
        "kept as converted",
        soft_wrap=True,
    )
    console.print(changes_line(done["changes"]), soft_wrap=True)
    for kind, n in sorted(counts["problems"].items()):
        console.print(f"[bold yellow]warning:[/] {n} {kind}", soft_wrap=True)
