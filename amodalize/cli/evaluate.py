"""`amodalize evaluate` (scores against ground truth), `amodalize visualize` (pictures) and
`amodalize report` (a page on a converted file's quality, without ground truth)."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from amodalize.cli.options import (
    EXISTING_FILE,
    FORMAT_OPTION,
    GT_ORDER_OPTION,
    IMAGE_IDS_OPTION,
    JSON_OPTION,
    OUT_DIR,
    console,
    images_dir_option,
    parse_ids,
    progress_bar,
)


@click.command()
@click.argument("pred_json", type=EXISTING_FILE)
@click.argument("gt_json", type=EXISTING_FILE)
@GT_ORDER_OPTION
@click.option(
    "--gt-format",
    type=click.Choice(["coco_amodal", "cocoa", "kins"]),
    default=None,
    help="GT_JSON's format (with --fixed too); autodetected when omitted.",
)
@click.option(
    "--fixed",
    is_flag=True,
    help="GT_JSON is PRED_JSON as people fixed it (`amodalize import`): also count what they changed "
    "(edges reversed, removed, added; objects edited, deleted) and how much of it the least-sure 10% held.",
)
@JSON_OPTION
def evaluate(pred_json: Path, gt_json: Path, gt_order: str, gt_format: str | None, fixed: bool, as_json: bool) -> None:
    """Score PRED_JSON (an amodalize output) against GT_JSON amodal ground truth.

    Reports ordering accuracy on GT-occluded pairs and amodal IoU (pooled, as the paper's mIoU,
    and per-instance). Examples:

    \b
        amodalize evaluate amodal_val.json COCO_amodal_val2014.json
        amodalize evaluate amodal_val.json amodal_val_fixed.json --fixed
    """
    if fixed:
        from amodalize.check.changes import compare

        metrics = compare(pred_json, gt_json, gt_order, gt_format)
    else:
        from amodalize.check.evaluate import evaluate as run
        from amodalize.data.formats import read_dataset

        metrics = run(read_dataset(pred_json, "coco_amodal"), read_dataset(gt_json, gt_format), gt_order)
    if as_json:
        click.echo(json.dumps(metrics))
        return
    console.print(metrics_table(metrics, title=f"{pred_json.name} vs {gt_json.name}"))
    if fixed:
        from amodalize.check.changes import changes_line

        console.print(changes_line(metrics["changes"]), soft_wrap=True)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def metrics_table(m: dict, title: str) -> Table:
    """The evaluate metrics as a rich table (percentages)."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row(
        "ordering accuracy (occluded pairs)", f"{_pct(m['order_acc'])}  ({m['order_correct']}/{m['order_pairs']})"
    )
    table.add_row("pooled IoU (paper's mIoU)", _pct(m["pooled_iou"]))
    table.add_row("mean IoU, all instances", f"{_pct(m['miou'])}  (n={m['instances']})")
    table.add_row("mean IoU, occluded instances", f"{_pct(m['miou_occluded'])}  (n={m['occluded_instances']})")
    for b in m["by_occlusion"]:
        table.add_row(f"  pooled IoU, occlusion {b['bin']}", f"{_pct(b['pooled_iou'])}  (n={b['instances']})")
    for b in m["by_hidden_share"]:
        table.add_row(
            f"  {b['bin']} hidden: IoU / missing / extra",
            f"{_pct(b['miou'])} / {_pct(b['missing'])} / {_pct(b['extra'])}  (n={b['instances']})",
        )
    edges, amodal = m.get("edge_confidence"), m.get("amodal_confidence")
    if edges:
        table.add_row("edge confidence: calibration error (ECE)", f"{edges['ece']:.3f}  (n={edges['count']})")
        table.add_row(
            "  wrong edges among the least-confident 10%",
            f"{edges['wrong_in_least_confident']} of {edges['wrong']}  ({edges['least_confident']} edges)",
        )
        calibrated = edges["if_calibrated"]
        share = calibrated["wrong_share_in_least_confident"]
        table.add_row(
            "  were they exactly calibrated: ECE (median, 90%) / wrong share",
            f"{calibrated['ece_median']:.3f}, {calibrated['ece_p90']:.3f} / {'-' if share is None else f'{share:.0%}'}",
        )
    if amodal:
        table.add_row(
            "amodal_confidence vs true IoU: mean abs. error / ECE",
            f"{amodal['mean_abs_error']:.3f} / {amodal['ece']:.3f}  (n={amodal['count']})",
        )
    return table


@click.command()
@click.argument("ann_json", type=EXISTING_FILE)
@click.argument("out_dir", type=OUT_DIR)
@IMAGE_IDS_OPTION
@images_dir_option("Draw over the image files found here.")
@FORMAT_OPTION
def visualize(ann_json: Path, out_dir: Path, image_ids: str | None, images_dir: Path | None, fmt: str | None) -> None:
    """Draw visible masks, dashed amodal outlines and occluder→occludee arrows, one PNG per image.

    Example:

    \b
        amodalize visualize amodal_val.json pictures/ --images 1,2 --images-dir val2014/
    """
    from amodalize.check.visualize import write_pictures
    from amodalize.data.formats import read_dataset

    written, blank = write_pictures(read_dataset(ann_json, fmt), out_dir, parse_ids(image_ids, "--images"), images_dir)
    for name in blank[:5]:
        console.print(escape(f"image file {name!r} not found in {images_dir}: drawn on a blank canvas"), soft_wrap=True)
    note = f", {len(blank)} of them on a blank canvas (their image files are not in {images_dir})" if blank else ""
    console.print(escape(f"wrote {len(written)} pictures to {out_dir}{note}"), soft_wrap=True)


@click.command()
@click.argument("converted_json", type=EXISTING_FILE)
@click.argument("out_dir", type=OUT_DIR)
@images_dir_option("Draw the pictures over the image files found here (else on a blank canvas).")
@click.option(
    "--gt",
    "gt_json",
    type=EXISTING_FILE,
    default=None,
    help="Amodal ground truth of the same images: the measured figures and reliability diagrams beside the estimates.",
)
@GT_ORDER_OPTION
@click.option(
    "--top",
    type=click.IntRange(min=1),
    default=50,
    help="How many of the least-confident images to draw and put in review.coco.json.",
)
@click.option(
    "--segmentation",
    type=click.Choice(["polygon", "rle"]),
    default="polygon",
    show_default=True,
    help="How review.coco.json holds the amodal masks: COCO polygons (what annotation tools import) or RLE.",
)
def report(
    converted_json: Path,
    out_dir: Path,
    images_dir: Path | None,
    gt_json: Path | None,
    gt_order: str,
    top: int,
    segmentation: str,
) -> None:
    """Write OUT_DIR/index.html: how good CONVERTED_JSON's labels are, and what to check first.

    Estimates ordering accuracy and completion IoU from the file's calibrated confidences (no
    ground truth needed), draws the least-confident images, and writes them with their
    annotations to OUT_DIR/review.coco.json for an annotation tool. The page opens from disk.
    Example:

    \b
        amodalize report val_amodal.json report/ --images-dir val2014/
    """
    from amodalize.check.report import INDEX, REVIEW_FILE, write_report

    with progress_bar() as bar:
        task = bar.add_task("drawing the least-confident images", total=None, visible=False)
        result = write_report(
            converted_json,
            out_dir,
            images_dir=images_dir,
            gt=gt_json,
            gt_order=gt_order,
            top=top,
            segmentation=segmentation,
            on_start=lambda n: bar.update(task, total=n, visible=True),
            on_progress=lambda: bar.advance(task),
        )
    s = result["summary"]
    acc, iou = s["order_accuracy"], s["occluded_iou"]
    estimate = []
    if acc:
        estimate.append(
            f"ordering accuracy ~{100 * acc['value']:.1f}% ({100 * acc['low']:.1f}-{100 * acc['high']:.1f})"
        )
    if iou:
        estimate.append(
            f"occluded-object IoU ~{100 * iou['value']:.1f} ({100 * iou['low']:.1f}-{100 * iou['high']:.1f})"
        )
    console.print(
        f"wrote {out_dir / INDEX} and {out_dir / REVIEW_FILE} ({result['shown']} images to check first); "
        f"estimated {', '.join(estimate)}",
        soft_wrap=True,
    )
    if result["blank_note"]:
        console.print(f"[bold yellow]warning:[/] {escape(result['blank_note'])}", soft_wrap=True)
