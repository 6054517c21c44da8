"""The ``amodalize`` command line: each command parses options, calls one function and reports.

Status and progress go to stderr; stdout only carries machine-readable results (``--json``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from amodalize import __version__
from amodalize.data.formats import FORMATS
from amodalize.errors import AmodalizeError

console = Console(stderr=True)
EXISTING_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


def progress_bar() -> Progress:
    """The rich progress bar every long command uses."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


class _Group(click.Group):
    """Turns AmodalizeError into one line on stderr and its exit code; real bugs keep their traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except AmodalizeError as e:
            console.print(f"[bold red]error:[/] {escape(str(e))}", soft_wrap=True)
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            console.print(
                "[bold red]interrupted:[/] finished work is kept; run the same command again to continue "
                "(train: add --resume)",
                soft_wrap=True,
            )
            ctx.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="amodalize")
def cli() -> None:
    """Turn modal instance annotations into amodal masks and pairwise occlusion order.

    Typical use: `amodalize convert modal.json amodal.json`, then
    `amodalize evaluate amodal.json gt.json` where ground truth exists.
    """


ORDER_TH_OPTION = click.option(
    "--order-th",
    type=click.FloatRange(0, 1),
    default=None,
    help="PCNet-M foreground threshold for ordering [default: the checkpoint's calibration, else 0.1].",
)
AMODAL_TH_OPTION = click.option(
    "--amodal-th",
    type=click.FloatRange(0, 1),
    default=None,
    help="PCNet-M foreground threshold for completion [default: the checkpoint's calibration, else 0.2].",
)


class AutoOrCount(click.ParamType):
    """'auto' or an integer >= 0."""

    name = "auto|K"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> object:
        if value == "auto" or isinstance(value, int) and value >= 0:
            return value
        if isinstance(value, str) and value.isdigit():
            return int(value)
        self.fail(f"expected 'auto' or a whole number >= 0, got {value!r}", param, ctx)


ERASER_DILATE_OPTION = click.option(
    "--eraser-dilate",
    type=AutoOrCount(),
    default="auto",
    help="Grow erasers by K pixels and let the touching test bridge K-pixel gaps. auto: measure the gap "
    "between neighbouring masks and use the calibrated dilation for it; 0: the reference.",
)
DEVICE_OPTION = click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", help="auto: CUDA when available."
)
FORMAT_OPTION = click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default=None,
    help="Input format; autodetected when omitted.",
)


@cli.command()
@click.argument("input_json", type=EXISTING_FILE)
@click.argument("output_json", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--checkpoint",
    default=None,
    metavar="NAME|PATH",
    help="PCNet-M: a shipped model by name, an `amodalize train` checkpoint or the reference's *.pth.tar "
    "[default: the shipped model 'general'].",
)
@click.option(
    "--method",
    type=click.Choice(["raw", "convex", "convex-r", "pcnet"]),
    default="pcnet",
    help="Amodal completion: pcnet; raw = visible mask; convex = its hull; convex-r = hull kept only under "
    "occluders (no model).",
)
@click.option(
    "--order",
    "order",
    type=click.Choice(["area", "y-axis", "convex", "pcnet", "fused"]),
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
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the least-confident 10% of the edges and completions, and the images holding them, "
    "to this JSON file: what to check first.",
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
    "--no-clip, no dilation, bilinear completion inputs), whatever the checkpoint holds.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="PCNet-M queries per forward (default: 16 at 64 px and 1 at 256 px on CPU, 256 on CUDA; 1 = reference loop).",
)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", help="Where PCNet-M runs.")
@FORMAT_OPTION
@click.option("--compat", type=click.Choice(["kins"]), default=None, help="Also write KINS-2019 key names.")
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
@click.option(
    "--shard",
    type=str,
    default=None,
    metavar="K/N",
    help="Convert only shard K of N (images K, K+N, ...) into a part file for `amodalize merge`.",
)
def convert(input_json: Path, output_json: Path, checkpoint: str | None, shard: str | None, **options: object) -> None:
    """Write INPUT_JSON with amodal masks and occlusion order added as OUTPUT_JSON.

    Every input field is kept; see README "Output schema". Examples:

    \b
        amodalize convert val.json val_amodal.json --checkpoint runs/small/checkpoint.pt

    \b
        amodalize convert val.json val_convexr.json --method convex-r --order convex
    """
    import os

    from amodalize.pipeline import convert_file, merge_files, parts_dir

    if output_json.resolve() == input_json.resolve():
        raise click.BadParameter("the output would overwrite the input file", param_hint="OUTPUT_JSON")
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    target = output_json
    if shard is not None:
        parts = _parse_shard(shard)
    elif world > 1:  # under torchrun: one shard per process, rank 0 merges
        parts = (rank, world)
        target = parts_dir(output_json) / f"shard-{rank}-of-{world}.json"
    else:
        parts = None
    with progress_bar() as bar:
        task = bar.add_task("converting images", total=None, visible=False)
        summary = convert_file(
            input_json,
            target,
            checkpoint=checkpoint,
            shard=parts,
            on_start=lambda n, done: bar.update(task, total=n, completed=done, visible=True),
            on_progress=lambda n: bar.advance(task, n),
            **options,
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
        f"{summary['cyclic_images']} images with an order cycle, {summary['seconds']:.1f} s",
        soft_wrap=True,
    )
    model = summary.get("model")
    if model:
        console.print(escape(f"PCNet-M: {model}"), soft_wrap=True)
    console.print(escape(settings_line(summary["settings"], summary["decided"])), soft_wrap=True)
    if summary["tta"]:
        fusion = summary["decided"].get("fusion_source")
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


def _parse_shard(text: str) -> tuple[int, int]:
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise click.BadParameter(f"expected K/N such as 0/4, got {text!r}", param_hint="--shard") from None
    if not 0 <= k < n:
        raise click.BadParameter(f"K must lie in 0..N-1, got {text!r}", param_hint="--shard")
    return k, n


@cli.command()
@click.argument("parts", nargs=-1, required=True, type=EXISTING_FILE)
@click.argument("output_json", type=click.Path(dir_okay=False, path_type=Path))
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


@cli.command()
@click.argument("pred_json", type=EXISTING_FILE)
@click.argument("gt_json", type=EXISTING_FILE)
@click.option(
    "--gt-order",
    type=click.Choice(["masks", "annotated"]),
    default="masks",
    help="GT order from the masks of touching pairs (the reference protocol) or from annotations.",
)
@click.option(
    "--gt-format",
    type=click.Choice(["coco_amodal", "cocoa", "kins"]),
    default=None,
    help="GT format; autodetected when omitted.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout instead of a table.")
def evaluate(pred_json: Path, gt_json: Path, gt_order: str, gt_format: str | None, as_json: bool) -> None:
    """Score PRED_JSON (an amodalize output) against GT_JSON amodal ground truth.

    Reports ordering accuracy on GT-occluded pairs and amodal IoU (pooled, as the paper's mIoU,
    and per-instance). Example:

    \b
        amodalize evaluate amodal_val.json COCO_amodal_val2014.json
    """
    from amodalize.data.formats import read_dataset
    from amodalize.evaluate import evaluate as run

    metrics = run(read_dataset(pred_json, "coco_amodal"), read_dataset(gt_json, gt_format), gt_order)
    if as_json:
        click.echo(json.dumps(metrics))
        return
    console.print(metrics_table(metrics, title=f"{pred_json.name} vs {gt_json.name}"))


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


@cli.command()
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--images", "n_images", type=click.IntRange(min=1), default=100, help="Number of scenes.")
@click.option("--seed", type=int, default=0, help="Random seed; the same seed gives the same files.")
@click.option("--size", type=click.IntRange(min=32), default=256, help="Image width and height in pixels.")
@click.option("--gap", type=click.IntRange(min=0), default=0, help="Erode every visible mask by this many pixels.")
@click.option(
    "--polygon",
    type=click.FloatRange(min=0),
    default=0.0,
    metavar="PX",
    help="Redraw procedural shapes as polygons within PX pixels of their outlines, as annotators click them.",
)
@click.option("--render", is_flag=True, help="Also paint textured RGB images into OUT_DIR/images.")
@click.option(
    "--objects", default="3,7", metavar="MIN,MAX", help="Objects attempted per image (hidden ones are dropped)."
)
@click.option(
    "--kinds",
    default=None,
    metavar="KIND,...",
    help="Draw only these procedural shapes (ellipse, convex, concave, rounded_box, star, bar, ring), e.g. "
    "ellipse,convex,rounded_box for convex objects like those on a table [default: all].",
)
@click.option(
    "--shapes-from",
    "shape_files",
    multiple=True,
    type=EXISTING_FILE,
    help="Layer the objects of this annotation file (amodal masks where annotated, else visible) instead of "
    "procedural shapes; repeat for several files.",
)
@FORMAT_OPTION
def synth(
    out_dir: Path,
    n_images: int,
    seed: int,
    size: int,
    gap: int,
    polygon: float,
    render: bool,
    objects: str,
    kinds: str | None,
    shape_files: tuple[Path, ...],
    fmt: str | None,
) -> None:
    """Generate occlusion scenes with exact ground truth into OUT_DIR.

    Writes modal.json (plain COCO, what a user has) and gt.json (COCO-amodal with occluded_by).
    Examples:

    \b
        amodalize synth demo/synth --images 50 --seed 1 --gap 1
        amodalize synth demo/real-shapes --shapes-from cocoa_val.json --size 320
    """
    from amodalize.data.formats import read_dataset
    from amodalize.data.synth import SHAPES, SynthOptions, make_dataset, shapes_from

    try:
        low, high = (int(v) for v in objects.split(","))
    except ValueError:
        raise click.BadParameter(f"expected MIN,MAX such as 2,4, got {objects!r}", param_hint="--objects") from None
    if not 1 <= low <= high:
        raise click.BadParameter(f"need 1 <= MIN <= MAX, got {objects!r}", param_hint="--objects")
    drawn = SHAPES if kinds is None else tuple(k.strip() for k in kinds.split(",") if k.strip())
    try:
        opts = SynthOptions(
            width=size,
            height=size,
            min_objects=low,
            max_objects=high,
            gap=gap,
            polygon=polygon,
            render=render,
            kinds=drawn,
        )
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--kinds") from None
    shapes = shapes_from([read_dataset(f, fmt) for f in shape_files], size, size) if shape_files else None
    if shape_files and not shapes:
        raise click.BadParameter("the files hold no object of 16 pixels or more", param_hint="--shapes-from")
    modal, gt = make_dataset(out_dir, n_images, seed, opts, shapes)
    console.print(f"wrote {modal} and {gt}", soft_wrap=True)


@cli.command()
@click.argument("ann_json", type=EXISTING_FILE)
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--images", "image_ids", default=None, help="Comma-separated image ids (default: all).")
@click.option(
    "--images-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Draw over the image files found here.",
)
@FORMAT_OPTION
def visualize(ann_json: Path, out_dir: Path, image_ids: str | None, images_dir: Path | None, fmt: str | None) -> None:
    """Draw visible masks, dashed amodal outlines and occluder→occludee arrows, one PNG per image.

    Example:

    \b
        amodalize visualize amodal_val.json pictures/ --images 1,2 --images-dir val2014/
    """
    from amodalize.data.formats import read_dataset
    from amodalize.visualize import write_pictures

    written = write_pictures(read_dataset(ann_json, fmt), out_dir, _ids(image_ids, "--images"), images_dir)
    console.print(f"wrote {len(written)} pictures to {out_dir}", soft_wrap=True)


@cli.command()
@click.argument("data", nargs=-1, required=True, type=EXISTING_FILE)
@click.option(
    "--model",
    "model_kind",
    type=click.Choice(["pcnet-m", "pcnet-c"]),
    default="pcnet-m",
    help="pcnet-m completes masks (for convert); pcnet-c paints hidden content (for deocclude, needs --images-dir).",
)
@click.option(
    "--config",
    "config_path",
    default=None,
    metavar="NAME|PATH",
    help="A preset (cpu-small, cocoa, kins; pcnet_c/cpu-small, pcnet_c/cocoa) or a YAML file. "
    "Default: cpu-small on CPU, cocoa (the paper's schedule) on CUDA.",
)
@click.option(
    "--images-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="PCNet-C: folder of the images of DATA.",
)
@click.option(
    "--perceptual-weights",
    type=EXISTING_FILE,
    default=None,
    help="PCNet-C: a local torchvision VGG16 state dict; adds the perceptual and style losses (else skipped).",
)
@click.option(
    "--out",
    "run_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Run directory: config.yaml, checkpoint.pt, log.jsonl, val_grid.png.",
)
@click.option("--iters", type=click.IntRange(min=1), default=None, help="Override optim.iters.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Override optim.batch_size (global).")
@DEVICE_OPTION
@click.option("--resume", is_flag=True, help="Continue the checkpoint in --out exactly where it stopped.")
@click.option(
    "--init",
    default=None,
    metavar="NAME|PATH",
    help="PCNet-M: start from these weights (a shipped model such as 'general', with --config cpu-small, or a "
    "checkpoint) instead of from scratch: fine-tuning.",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config field, e.g. --set optim.lr=0.01 (repeatable).",
)
def train(
    data: tuple[Path, ...],
    model_kind: str,
    config_path: Path | None,
    images_dir: Path | None,
    perceptual_weights: Path | None,
    run_dir: Path,
    iters: int | None,
    batch_size: int | None,
    device: str,
    resume: bool,
    init: str | None,
    overrides: tuple[str, ...],
) -> None:
    """Train PCNet-M (masks) or PCNet-C (content) self-supervised on DATA (COCO, COCOA or KINS files).

    Only visible masks (and, for PCNet-C, the images) are used. Ctrl-C saves a checkpoint;
    --resume continues it. Several GPUs or machines: run under torchrun. Examples:

    \b
        amodalize train demo/synth/modal.json --config cpu-small --out runs/small

    \b
        amodalize train --model pcnet-c demo/synth/modal.json --images-dir demo/synth/images \\
            --config pcnet_c/cpu-small --out runs/small-c

    \b
        torchrun --nproc_per_node 4 -m amodalize train train.json --config cocoa --out runs/cocoa
    """
    import os

    from amodalize.config import ContentConfig, TrainConfig, default_preset, load_config, preset_note
    from amodalize.train.loop import resolve_device

    content = model_kind == "pcnet-c"
    if content and images_dir is None:
        raise click.UsageError("--model pcnet-c needs --images-dir (PCNet-C learns from the image pixels)")
    if not content and (images_dir or perceptual_weights):
        raise click.UsageError("--images-dir and --perceptual-weights are for --model pcnet-c")
    if content and init:
        raise click.UsageError("--init is for --model pcnet-m")
    extra = [f"optim.iters={iters}"] * (iters is not None) + [f"optim.batch_size={batch_size}"] * (
        batch_size is not None
    )
    kind = ContentConfig if content else TrainConfig
    show = os.environ.get("RANK", "0") == "0"
    if config_path is None:
        config_path = default_preset(resolve_device(device).type, kind)
        if show:
            console.print(f"no --config: using the preset {config_path} ({preset_note(config_path, kind)})")
    cfg = load_config(config_path, [*overrides, *extra], kind)
    with progress_bar() as bar:
        task = bar.add_task("training", total=cfg.optim.iters, visible=False)

        def ready(info: dict) -> None:
            if show:
                held = info["val_instances"]
                steps = f"{info['start']}..{info['iters']}"
                gap = f", gap between neighbouring masks {info['gap']:g} px" if "gap" in info else ""
                if info.get("recipe_gap"):
                    gap += f" (training inputs leave {info['recipe_gap']:g} px)"
                console.print(f"{info['instances']} instances ({held} held out){gap}, steps {steps}")
                bar.update(task, completed=info["start"], visible=True)

        def step(record: dict) -> None:
            if show:
                speed = f"{record['samples_per_s']:.0f} samples/s"
                bar.update(task, completed=record["step"], description=f"training loss {record['loss']:.4f} {speed}")

        if content:
            from amodalize.train.content import train_content

            metrics = train_content(
                cfg,
                list(data),
                images_dir,
                run_dir,
                resume=resume,
                device=device,
                perceptual_weights=perceptual_weights,
                on_step=step,
                on_ready=ready,
            )
        else:
            from amodalize.train.loop import train as run

            metrics = run(
                cfg, list(data), run_dir, resume=resume, device=device, init=init, on_step=step, on_ready=ready
            )
    if show and content:
        console.print(
            f"validation, mean absolute error inside the holes (0-255): PCNet-C {metrics['hole_l1']:.2f}, "
            f"mean-colour fill {metrics['mean_fill_l1']:.2f}, OpenCV inpainting {metrics['inpaint_l1']:.2f}; "
            f"run in {run_dir}",
            soft_wrap=True,
        )
    elif show:
        console.print(
            f"validation: IoU {100 * metrics['iou']:.2f} (raw {100 * metrics['raw_iou']:.2f}), "
            f"in-eraser IoU {100 * metrics['eraser_iou']:.2f}; run in {run_dir}",
            soft_wrap=True,
        )
        cal = metrics.get("calibration")
        if cal:
            console.print(
                f"calibrated on {cal['samples']} synthetic occlusions at gap {cal['gap']} px: --order-th "
                f"{cal['order_th']} --amodal-th {cal['amodal_th']} --eraser-dilate {cal['eraser_dilate']} "
                f"(order accuracy {100 * cal['order_acc']:.1f}, IoU {100 * cal['iou']:.1f}); convert uses these",
                soft_wrap=True,
            )


def _ids(text: str | None, option: str) -> list[int] | None:
    try:
        return [int(v) for v in text.split(",")] if text else None
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}", param_hint=option) from None


@cli.command()
@click.argument("ann_json", type=EXISTING_FILE)
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--images-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="Folder of the images of ANN_JSON.",
)
@click.option("--checkpoint-c", type=EXISTING_FILE, required=True, help="PCNet-C checkpoint (train --model pcnet-c).")
@click.option(
    "--checkpoint-m",
    default=None,
    metavar="NAME|PATH",
    help="PCNet-M (shipped model name or checkpoint) for the amodal masks and order [default: ANN_JSON's own "
    "amodal masks where it has them (a convert output, amodal ground truth), else the shipped model 'general'].",
)
@click.option("--images", "image_ids", default=None, help="Comma-separated image ids (default: all).")
@ORDER_TH_OPTION
@AMODAL_TH_OPTION
@ERASER_DILATE_OPTION
@click.option(
    "--hole-dilate",
    type=click.IntRange(min=0),
    default=5,
    help="Repaint this far (pixels of a 256-px object crop) into the visible part around each hidden part.",
)
@click.option(
    "--background-dilate",
    type=click.IntRange(min=0),
    default=4,
    help="Repaint this far (pixels at a 384-px image side) around every object in the background.",
)
@click.option(
    "--background",
    type=click.Choice(["pcnet-c", "opencv"]),
    default="pcnet-c",
    help="Who paints the background where the objects were: PCNet-C (the paper) or cv2.inpaint.",
)
@click.option(
    "--background-scale",
    type=click.FloatRange(min=0.1),
    default=1.0,
    help="Paint the background on the whole image at this many times the PCNet-C input size.",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="PCNet-C crops per forward.")
@click.option(
    "--shard",
    type=str,
    default=None,
    metavar="K/N",
    help="Only images K, K+N, ... (one folder per image, so shards can share OUT_DIR); under torchrun each "
    "process takes its own shard.",
)
@DEVICE_OPTION
@FORMAT_OPTION
def deocclude(
    ann_json: Path,
    out_dir: Path,
    images_dir: Path,
    checkpoint_c: Path,
    checkpoint_m: str | None,
    image_ids: str | None,
    order_th: float | None,
    amodal_th: float | None,
    eraser_dilate: int | str,
    fmt: str | None,
    shard: str | None,
    **options: object,
) -> None:
    """Take each image of ANN_JSON apart into intact objects and a background, in OUT_DIR.

    Per image, OUT_DIR/<image id>/ gets object-<annotation id>.png (RGBA, alpha = amodal mask,
    hidden parts painted by PCNet-C), background.png (every object removed) and layers.json
    (boxes, order graph, paint order). Finished images are skipped on a rerun. Example:

    \b
        amodalize deocclude val.json layers/ --images-dir val2014/ --checkpoint-m m.pt --checkpoint-c c.pt

    \b
        torchrun --nproc_per_node 4 -m amodalize deocclude val.json layers/ --images-dir val2014/ ...
    """
    import os

    from amodalize.scene.deocclude import deocclude_file

    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    parts = _parse_shard(shard) if shard is not None else (rank, world) if world > 1 else None

    with progress_bar() as bar:
        task = bar.add_task("de-occluding images", total=None, visible=False)
        summary = deocclude_file(
            ann_json,
            images_dir,
            out_dir,
            checkpoint_c,
            checkpoint_m=checkpoint_m,
            fmt=fmt,
            image_ids=_ids(image_ids, "--images"),
            shard=parts,
            convert_settings={"order_th": order_th, "amodal_th": amodal_th, "eraser_dilate": eraser_dilate},
            on_start=lambda n, done: bar.update(task, total=n, completed=done, visible=True),
            on_progress=lambda n: bar.advance(task, n),
            **options,
        )
    console.print(
        f"wrote {out_dir}: {summary['images']} images ({summary['skipped']} already done), "
        f"{summary['objects']} object layers, {summary['painted']} with painted hidden parts, "
        f"{summary['cyclic']} images with an order cycle, {summary['seconds']:.1f} s",
        soft_wrap=True,
    )


def _pair(text: str, option: str, sep: str) -> tuple[int, int]:
    try:
        a, b = (int(v) for v in text.split(sep))
    except ValueError:
        example = "3:10,-5" if option == "--shift" else "3,7"
        raise click.BadParameter(f"expected something like {example}, got {text!r}", param_hint=option) from None
    return a, b


@cli.command()
@click.argument("layers_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--image", "image_id", type=int, default=None, help="Image id, when LAYERS_DIR holds several.")
@click.option("--delete", multiple=True, type=int, metavar="ID", help="Remove an object (repeatable).")
@click.option("--shift", multiple=True, metavar="ID:DX,DY", help="Move an object by DX, DY pixels (repeatable).")
@click.option("--swap", multiple=True, metavar="ID1,ID2", help="Swap two objects' depth positions (repeatable).")
@click.option("--to-front", multiple=True, type=int, metavar="ID", help="Bring an object to the front (repeatable).")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="The new image (PNG/JPG)."
)
@click.option(
    "--compare",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write original | modal-only baseline | amodalize side by side.",
)
def recompose(
    layers_dir: Path,
    image_id: int | None,
    delete: tuple[int, ...],
    shift: tuple[str, ...],
    swap: tuple[str, ...],
    to_front: tuple[int, ...],
    output: Path,
    compare: Path | None,
) -> None:
    """Repaint a de-occluded image from its layers after edits.

    Deleting an object reveals the completed objects and background behind it; shifting moves a
    completed object. Edits apply in the order: delete, swap, to-front, shift. Example:

    \b
        amodalize recompose layers/1 --delete 4 --shift 7:20,0 -o edited.png --compare side.png
    """
    from amodalize.data.images import write_image_atomic
    from amodalize.scene import recompose as rc

    shifts = {}
    for item in shift:
        key, _, offset = item.partition(":")
        if not key.strip().lstrip("-").isdigit():
            raise click.BadParameter(f"expected ID:DX,DY such as 3:10,-5, got {item!r}", param_hint="--shift")
        shifts[int(key)] = _pair(offset, "--shift", ",")
    edits = rc.Edits(list(delete), [_pair(s, "--swap", ",") for s in swap], list(to_front), shifts)
    scene = rc.load_scene(rc.find_scene(layers_dir, image_id))
    new = rc.recompose(scene, edits)
    write_image_atomic(output, new[..., ::-1])
    message = f"wrote {output}"
    if compare is not None or not edits.ids():
        original = rc.original_image(scene)
        if not edits.ids():
            error = rc.mean_abs_error(new, original)
            message += f"; mean absolute difference from the original image: {error:.2f} (0-255)"
        if compare is not None:
            baseline = rc.modal_baseline(original, scene.doc, edits)
            picture = rc.side_by_side([original, baseline, new], ["original", "modal only + inpaint", "amodalize"])
            write_image_atomic(compare, picture[..., ::-1])
            message += f"; comparison in {compare}"
    console.print(message, soft_wrap=True)


@cli.group()
def maskrcnn() -> None:
    """Validate label files by training Mask R-CNN on them and scoring amodal mask AP.

    Needs torchvision (pip install 'amodalize[maskrcnn]'). The paper's Table 4 protocol: the same
    detector trained on different label sources for the same images, scored on amodal GT.
    """


def _maskrcnn_options(f: Callable) -> Callable:
    """The training options shared by `maskrcnn train` and `maskrcnn compare`."""
    options = [
        click.option(
            "--model",
            "arch",
            type=click.Choice(["mnv3-fpn", "r50-fpn"]),
            default=None,
            help="Default: mnv3-fpn on CPU, r50-fpn on CUDA.",
        ),
        click.option("--iters", type=click.IntRange(min=1), default=1000, help="Training iterations."),
        click.option("--batch-size", type=click.IntRange(min=1), default=2, help="Images per iteration."),
        click.option("--lr", type=float, default=0.02, help="SGD learning rate (warm-up, then cosine)."),
        click.option(
            "--image-size", type=click.IntRange(min=0), default=0, help="Resize side (0: the data's native size)."
        ),
        click.option("--seed", type=int, default=0, help="Seeds initialisation and image order."),
        DEVICE_OPTION,
        click.option(
            "--images-dir",
            type=click.Path(exists=True, file_okay=False, path_type=Path),
            required=True,
            help="Folder of the training images.",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _maskrcnn_config(arch: str | None, device: str, **fields: object) -> tuple[object, str]:
    from amodalize.maskrcnn import MaskRCNNConfig
    from amodalize.train.loop import resolve_device

    dev = resolve_device(device)
    arch = arch or ("r50-fpn" if dev.type == "cuda" else "mnv3-fpn")
    return MaskRCNNConfig(arch=arch, **fields), str(dev)


@maskrcnn.command("train")
@click.argument("ann_json", type=EXISTING_FILE)
@click.option(
    "--out", "run_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run directory."
)
@click.option("--resume", is_flag=True, help="Continue the checkpoint in --out.")
@click.option("--backbone-weights", type=EXISTING_FILE, default=None, help="A local torchvision backbone state dict.")
@_maskrcnn_options
def maskrcnn_train(
    ann_json: Path,
    run_dir: Path,
    resume: bool,
    backbone_weights: Path | None,
    images_dir: Path,
    arch: str | None,
    device: str,
    **fields: object,
) -> None:
    """Train Mask R-CNN on the `segmentation` masks of ANN_JSON (converted, modal or GT amodal).

    Example:

    \b
        amodalize maskrcnn train val_amodal.json --images-dir val2014/ --out runs/mrcnn --iters 2000
    """
    from amodalize.maskrcnn import train

    cfg, device = _maskrcnn_config(arch, device, **fields)
    with progress_bar() as bar:
        task = bar.add_task("training Mask R-CNN", total=cfg.iters)

        def step(record: dict) -> None:
            bar.update(task, completed=record["step"], description=f"Mask R-CNN loss {record['loss']:.3f}")

        last = train(
            cfg,
            ann_json,
            images_dir,
            run_dir,
            resume=resume,
            device=device,
            backbone_weights=backbone_weights,
            on_step=step,
        )
    console.print(f"trained {run_dir} to step {last.get('step')}", soft_wrap=True)


def _ap_table(rows: list[dict], title: str) -> Table:
    table = Table(title=title)
    for column in ("labels", "mask AP", "AP50", "AP75", "box AP"):
        table.add_column(column, justify="left" if column == "labels" else "right")
    for r in rows:
        table.add_row(r["labels"], *(f"{100 * r[k]:.2f}" for k in ("AP", "AP50", "AP75", "box_AP")))
    return table


@maskrcnn.command("evaluate")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("gt_json", type=EXISTING_FILE)
@click.option(
    "--images-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="Folder of the GT images.",
)
@DEVICE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout instead of a table.")
def maskrcnn_evaluate(run_dir: Path, gt_json: Path, images_dir: Path, device: str, as_json: bool) -> None:
    """Amodal mask AP (COCOeval segm) of the model in RUN_DIR against GT_JSON's amodal masks."""
    from amodalize.maskrcnn import evaluate_run

    _, device = _maskrcnn_config(None, device)
    metrics = evaluate_run(run_dir, gt_json, images_dir, device)
    if as_json:
        click.echo(json.dumps(metrics))
        return
    console.print(_ap_table([{"labels": run_dir.name, **metrics}], f"{run_dir.name} vs {gt_json.name}"))


@maskrcnn.command("compare")
@click.argument("label_files", nargs=-1, required=True, type=EXISTING_FILE)
@click.option("--gt", "gt_json", required=True, type=EXISTING_FILE, help="Ground truth with amodal masks.")
@click.option(
    "--gt-images-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Folder of the GT images (default: --images-dir).",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="One run per label file, compare.json, compare.png.",
)
@_maskrcnn_options
def maskrcnn_compare(
    label_files: tuple[Path, ...],
    gt_json: Path,
    gt_images_dir: Path | None,
    out_dir: Path,
    images_dir: Path,
    arch: str | None,
    device: str,
    **fields: object,
) -> None:
    """Train one Mask R-CNN per label file with identical seeds and schedule; print the AP table.

    Example (the paper's Table 4 on your data):

    \b
        amodalize maskrcnn compare raw.json convex_r.json pcnet.json gt_train.json --gt gt_test.json \\
            --images-dir train/ --gt-images-dir test/ --out runs/compare
    """
    from amodalize.maskrcnn import compare

    cfg, device = _maskrcnn_config(arch, device, **fields)
    with progress_bar() as bar:
        task = bar.add_task("", total=cfg.iters)

        def run(name: str) -> None:
            bar.reset(task, total=cfg.iters, description=f"Mask R-CNN on {name}")

        def step(record: dict) -> None:
            bar.update(task, completed=record["step"])

        rows = compare(
            list(label_files),
            gt_json,
            images_dir,
            gt_images_dir or images_dir,
            out_dir,
            cfg,
            device=device,
            on_run=run,
            on_step=step,
        )
    console.print(_ap_table(rows, f"amodal mask AP on {gt_json.name} ({cfg.arch}, {cfg.iters} iterations)"))
    console.print(f"wrote {out_dir / 'compare.json'} and {out_dir / 'compare.png'}", soft_wrap=True)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="amodalize")
