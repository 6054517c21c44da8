"""`amodalize export`: a converted file in the formats annotation and training tools open."""

from __future__ import annotations

from pathlib import Path

import click

from amodalize.cli.options import EXISTING_FILE, OUT_DIR, console, images_dir_option
from amodalize.export import TARGETS
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
    help="Label Studio: put before each file_name to make the task's image URL (Label Studio's local files "
    "by default; e.g. an https:// or s3:// prefix).",
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
