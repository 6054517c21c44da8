"""`amodalize convert` (amodal masks and order for a file, or one shard of it) and `amodalize merge`."""

from __future__ import annotations

import shutil
from pathlib import Path

import click
from rich.markup import escape

from amodalize.cli.options import (
    AMODAL_TH_OPTION,
    ERASER_DILATE_OPTION,
    EXISTING_FILE,
    FORMAT_OPTION,
    ORDER_TH_OPTION,
    OUT_FILE,
    console,
    device_option,
    progress_bar,
    shard_of,
    shard_option,
    torchrun_world,
)
from amodalize.infer.methods import AMODAL_METHODS, ORDER_METHODS


@click.command()
@click.argument("input_json", type=EXISTING_FILE)
@click.argument("output_json", type=OUT_FILE)
@click.option(
    "--checkpoint",
    default=None,
    metavar="NAME|PATH",
    help="PCNet-M: a shipped model by name, an `amodalize train` checkpoint or the reference's *.pth.tar "
    "[default: the shipped model 'general'].",
)
@click.option(
    "--method",
    type=click.Choice(list(AMODAL_METHODS)),
    default="pcnet",
    help="Amodal completion: pcnet; raw = visible mask; convex = its hull; convex-r = hull kept only under "
    "occluders (no model).",
)
@click.option(
    "--order",
    "order",
    type=click.Choice(list(ORDER_METHODS)),
    default=None,
    help="Ordering method: fused = dual completion and convex-hull evidence combined by a fit made without "
    "ground truth (gives each edge a confidence); pcnet = dual completion alone [default: fused with "
    "--method pcnet or --checkpoint (pcnet with --reference), else convex].",
)
@click.option(
    "--tta",
    type=click.Choice(["flip", "none"]),
    default=None,
    help="Test-time augmentation: flip also runs every PCNet-M query mirrored and averages the two "
    "[default: flip; none with --reference].",
)
@click.option(
    "--review",
    "review_json",
    type=OUT_FILE,
    default=None,
    help="Also write the least-confident 10% of the edges and completions, and the images holding them, "
    "to this JSON file: what to check first.",
)
@click.option(
    "--min-amodal-confidence",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Keep the input mask as the amodal mask where the completion's amodal_confidence (its estimated "
    "IoU) is below this, the completion kept as completed_mask (0: every completion is used).",
)
@click.option(
    "--area-front",
    type=click.Choice(["smaller", "larger"]),
    default="smaller",
    help="With --order area: which mask is in front (COCOA: smaller, KINS: larger).",
)
@ORDER_TH_OPTION
@AMODAL_TH_OPTION
@click.option(
    "--amodal",
    "amodal_mode",
    type=click.Choice(["og", "nog"]),
    default="og",
    help="Erasers: og = all ancestors in the order graph; nog = ordered neighbours.",
)
@click.option(
    "--increment",
    type=click.Choice(["code", "paper"]),
    default="code",
    help="Ordering increment: inside the eraser (reference code) or all new pixels (paper).",
)
@ERASER_DILATE_OPTION
@click.option(
    "--enlarge",
    type=click.FloatRange(min=1.0),
    default=3.0,
    help="Inference crop side = max(sqrt(w*h*ENLARGE), 1.1*w, 1.1*h) around each object's box.",
)
@click.option(
    "--recentre",
    type=click.IntRange(min=0),
    default=1,
    help="Complete each occluded object again this many times on a crop around its last completion "
    "(0: only the crop around its visible box, the reference; each pass costs a query per occluded object).",
)
@click.option(
    "--recentre-th",
    type=click.FloatRange(min=0, max=1),
    default=0.0,
    help="Set each recentred crop around where the last pass's P(fg) exceeds this (when below the completion "
    "threshold), not around the completion, which stops short of mostly hidden objects (0, the default: the "
    "completion; 0.1 completes objects over half hidden better on procedural and real-shape scenes, worse on COCOA).",
)
@click.option(
    "--grow-to-occluders",
    type=click.FloatRange(min=0, max=1),
    default=0.5,
    help="Set an occluded object's completion crop around its visible box grown this share of the way toward "
    "the box of it and its occluders, under which its hidden part lies (0: the visible box, the reference; 0.5 "
    "completes objects over half hidden about 1 IoU point better on every set measured).",
)
@click.option(
    "--max-aspect",
    type=click.FloatRange(min=0),
    default=2.5,
    help="Complete an object longer than MAX_ASPECT times its width on a crop narrowed across it, so "
    "that it fills the network's input as if it were only that elongated (0: square crops, the reference).",
)
@click.option(
    "--keep-visible/--replace-visible",
    default=True,
    help="Union the visible mask into the PCNet-M completion, or let the completion replace it (reference).",
)
@click.option(
    "--clip-to-occluders/--no-clip",
    default=True,
    help="Keep completed pixels only under the occluders, or anywhere in the crop (reference).",
)
@click.option(
    "--reference",
    is_flag=True,
    help="Every setting of the reference test protocol at once (thresholds 0.1/0.2, --replace-visible, "
    "--no-clip, no dilation, bilinear completion inputs, --recentre 0, --grow-to-occluders 0, --max-aspect 0), "
    "whatever the checkpoint holds.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="PCNet-M queries per forward (default: 16 at 64 px and 1 at 256 px on CPU, 256 on CUDA; 1 = reference loop).",
)
@device_option("Where PCNet-M runs.")
@FORMAT_OPTION
@click.option("--compat", type=click.Choice(["kins"]), default=None, help="Also write KINS-2019 key names.")
@click.option(
    "--segmentation",
    type=click.Choice(["rle", "polygon"]),
    default="rle",
    show_default=True,
    help="How amodal masks are written: compressed RLE (exact), or COCO polygons along the pixels' edges "
    "for tools that read no RLE (Label Studio's importer, YOLO converters; holes are filled).",
)
@click.option(
    "--workers",
    type=int,
    default=-1,
    help="Processes for the host work: model-free methods (-1: all cores), or mask work beside PCNet-M's "
    "forwards (-1: the cores less one on CUDA, none on CPU, where the convolutions use the cores).",
)
@click.option(
    "--images-from",
    type=EXISTING_FILE,
    default=None,
    help="INPUT_JSON is a detection-results list (predicted modal masks); take the images from this dataset file.",
)
@click.option("--min-score", type=float, default=0.0, help="With --images-from: drop detections scoring below this.")
@shard_option("Convert only shard K of N (images K, K+N, ...) into a part file for `amodalize merge`.")
def convert(input_json: Path, output_json: Path, checkpoint: str | None, shard: str | None, **options: object) -> None:
    """Write INPUT_JSON with amodal masks and occlusion order added as OUTPUT_JSON.

    Every input field is kept; see README "Output schema". Examples:

    \b
        amodalize convert val.json val_amodal.json --checkpoint runs/small/checkpoint.pt

    \b
        amodalize convert val.json val_convexr.json --method convex-r --order convex
    """
    from amodalize.infer.settings import ConvertRequest
    from amodalize.pipeline import FILE_OPTIONS, NOTHING_TO_COMPLETE, convert_file, merge_files, parts_dir

    if output_json.resolve() == input_json.resolve():
        raise click.BadParameter("the output would overwrite the input file", param_hint="OUTPUT_JSON")
    request, file_options = ConvertRequest.split({"checkpoint": checkpoint, **options}, FILE_OPTIONS)
    world, rank = torchrun_world()
    parts = shard_of(shard)
    target = output_json
    if shard is None and world > 1:  # under torchrun: one shard per process, rank 0 merges
        target = parts_dir(output_json) / f"shard-{rank}-of-{world}.json"
    with progress_bar() as bar:
        task = bar.add_task("converting images", total=None, visible=False)
        summary = convert_file(
            input_json,
            target,
            request,
            shard=parts,
            on_start=lambda n, done: bar.update(task, total=n, completed=done, visible=True),
            on_progress=lambda n: bar.advance(task, n),
            **file_options,
        )
    if shard is None and world > 1:
        import torch.distributed as dist

        dist.init_process_group("gloo")
        dist.barrier()
        if rank == 0:
            merge_files([parts_dir(output_json) / f"shard-{k}-of-{world}.json" for k in range(world)], output_json)
            shutil.rmtree(parts_dir(output_json), ignore_errors=True)
        dist.barrier()
        dist.destroy_process_group()
    console.print(
        f"wrote {target}: {summary['images']} images, {summary['instances']} instances completed, "
        f"{summary['edges']} occlusion edges from {summary['pairs']} candidate pairs, "
        f"{summary['cyclic_images']} images with an order cycle, "
        f"{summary['kept']} box-only or empty annotations kept as they are, {summary['seconds']:.1f} s",
        soft_wrap=True,
    )
    if summary["clipped"]:
        ids = ", ".join(map(str, summary["clipped"][:5])) + (", ..." if len(summary["clipped"]) > 5 else "")
        console.print(
            f"[bold yellow]warning:[/] {len(summary['clipped'])} annotations have polygon points outside their "
            f"image (ids {escape(ids)}): only the part inside was used; the input polygons are kept as they were",
            soft_wrap=True,
        )
    if summary["decided"].get("source") == NOTHING_TO_COMPLETE:
        what = (
            f"none of the {summary['kept']} annotations has a visible mask (box-only or empty)"
            if summary["kept"]
            else "the file has no annotation with a visible mask"
        )
        console.print(f"nothing completed: {what}; every annotation is written back as it came", soft_wrap=True)
        return
    overlaps = summary["overlaps"]
    if any(overlaps.values()):
        console.print(
            f"masks drawn over each other: {overlaps['nested']} nested pairs (the inner object put in front), "
            f"{overlaps['overlapping']} overlapping, {overlaps['sliver']} boundary slivers (touching); "
            "each visible mask is the object's part of their partition, the input kept as drawn_segmentation",
            soft_wrap=True,
        )
    model = summary.get("model")
    if model:
        console.print(escape(f"PCNet-M: {model}"), soft_wrap=True)
    if summary.get("categories_unseen"):
        ids = ", ".join(map(str, summary["categories_unseen"]))
        console.print(
            f"[bold yellow]warning:[/] the model multiplies its input by the category id (model.categories "
            f"multiply) and never saw these ids in training: {escape(ids)}",
            soft_wrap=True,
        )
    console.print(escape(settings_line(summary["settings"], summary["decided"])), soft_wrap=True)
    if summary["tta"]:
        fusion = summary["decided"].get("fusion_source")
        if fusion and summary["decided"].get("fusion_note"):
            fusion += f": {summary['decided']['fusion_note']}"
        console.print(
            escape(
                f"order: {summary['order']}{f' (fusion: {fusion})' if fusion else ''}; "
                f"test-time augmentation: {summary['tta']}"
            ),
            soft_wrap=True,
        )
    if options.get("review_json"):
        console.print(escape(f"least-confident edges and completions: {options['review_json']}"), soft_wrap=True)
    if summary.get("warning"):
        console.print(f"[bold yellow]warning:[/] {escape(summary['warning'])}", soft_wrap=True)


def settings_line(settings: dict, decided: dict) -> str:
    """One line on the settings a conversion used and where they came from."""
    gap = decided.get("gap")
    measured = f"gap between neighbouring masks {gap['gap']} px (measured); " if gap else ""
    return (
        f"{measured}--order-th {settings['order_th']} --amodal-th {settings['amodal_th']} "
        f"--eraser-dilate {settings['eraser_dilate']}, from {decided['source']}"
    )


@click.command()
@click.argument("parts", nargs=-1, required=True, type=EXISTING_FILE)
@click.argument("output_json", type=OUT_FILE)
def merge(parts: tuple[Path, ...], output_json: Path) -> None:
    """Join the PARTS written by `convert --shard K/N` into OUTPUT_JSON.

    Checks that the parts cover every image exactly once and were made with the same input,
    checkpoint and settings. Example:

    \b
        amodalize merge part0.json part1.json val_amodal.json
    """
    from amodalize.pipeline import merge_files

    summary = merge_files(list(parts), output_json)
    console.print(f"wrote {output_json}: {summary['images']} images from {summary['parts']} parts", soft_wrap=True)
