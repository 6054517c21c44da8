"""`amodalize maskrcnn train|evaluate|compare`: do the labels train a good detector?"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import click
from rich.table import Table

from amodalize.cli.options import (
    DEVICE_OPTION,
    EXISTING_DIR,
    EXISTING_FILE,
    JSON_OPTION,
    OUT_DIR,
    console,
    images_dir_option,
    progress_bar,
    run_dir_option,
    torchrun_world,
)


@click.group()
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
        click.option(
            "--heads-only",
            is_flag=True,
            help="Fine-tune the box and mask heads alone, keeping the start's backbone and region proposals "
            "(needs --init, or --base for compare): runs then differ only in what their labels teach; ~4x faster.",
        ),
        click.option(
            "--learned-floor",
            type=click.FloatRange(0, 1),
            default=None,
            help="Box AP (0-1) a trained detector must reach on the images it is checked on (train: its own "
            "first 50; compare: --gt), else the command says it did not learn and exits 1 without a comparison "
            "[default: 0.05, measured; 0: no check, for smoke runs of a few steps].",
        ),
        DEVICE_OPTION,
        images_dir_option("Folder of the training images.", required=True),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _maskrcnn_config(arch: str | None, device: str, **fields: object) -> tuple[object, str]:
    from amodalize.check.maskrcnn import MaskRCNNConfig
    from amodalize.infer.batcher import resolve_device

    dev = resolve_device(device)
    arch = arch or ("r50-fpn" if dev.type == "cuda" else "mnv3-fpn")
    if fields.get("learned_floor") is None:
        fields.pop("learned_floor", None)
    return MaskRCNNConfig(arch=arch, **fields), str(dev)


@maskrcnn.command("train")
@click.argument("ann_json", type=EXISTING_FILE)
@run_dir_option("Run directory.")
@click.option("--resume", is_flag=True, help="Continue the checkpoint in --out.")
@click.option("--backbone-weights", type=EXISTING_FILE, default=None, help="A local torchvision backbone state dict.")
@click.option(
    "--init",
    type=EXISTING_DIR,
    default=None,
    help="Start from the weights of this finished run (same architecture and categories): fine-tuning.",
)
@_maskrcnn_options
def maskrcnn_train(
    ann_json: Path,
    run_dir: Path,
    resume: bool,
    backbone_weights: Path | None,
    init: Path | None,
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
    from amodalize.check.maskrcnn import check_learned, train

    if fields["heads_only"] and init is None and not resume:
        raise click.UsageError("--heads-only fine-tunes a trained start: give it with --init")
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
            init=init,
            on_step=step,
        )
    if torchrun_world()[1]:
        return  # the first process reports and checks
    console.print(f"trained {run_dir} to step {last.get('step')}", soft_wrap=True)
    if cfg.learned_floor > 0:
        what = f"Mask R-CNN trained in {run_dir}"
        ap = check_learned(run_dir, ann_json, images_dir, cfg.learned_floor, what, device)
        console.print(f"it detects: box AP {100 * ap:.1f}% on its first training images ({ann_json.name})")


# (column, compare.json score): AP over every object, then where label sources differ, the occluded objects.
COLUMNS = (
    ("mask AP", "mask_ap"),
    ("box AP", "box_ap"),
    ("occluded mask AP", "occluded_ap"),
    ("occluded box AP", "occluded_box_ap"),
    ("occluded mIoU", "occluded_miou"),
    ("occluded mIoU, GT boxes", "occluded_boxed_miou"),
)


def _cell(score: dict) -> str:
    if score["mean"] is None:
        return "-"
    return f"{100 * score['mean']:.2f}" + (f" ({100 * score['spread']:.2f})" if len(score["per_seed"]) > 1 else "")


def _ap_table(rows: dict[str, dict], title: str) -> Table:
    """A table of ``summarize_seeds`` rows keyed by label source."""
    seeds = max(len(r["seeds"]) for r in rows.values())
    caption = f"mean over {seeds} seeds (spread: max - min)" if seeds > 1 else None
    table = Table(title=title, caption=caption)
    table.add_column("labels")
    for column, _ in COLUMNS:
        table.add_column(column, justify="right")
    for name, row in rows.items():
        table.add_row(name, *(_cell(row[key]) for _, key in COLUMNS))
    return table


@maskrcnn.command("evaluate")
@click.argument("run_dir", type=EXISTING_DIR)
@click.argument("gt_json", type=EXISTING_FILE)
@images_dir_option("Folder of the GT images.", required=True)
@DEVICE_OPTION
@JSON_OPTION
def maskrcnn_evaluate(run_dir: Path, gt_json: Path, images_dir: Path, device: str, as_json: bool) -> None:
    """Amodal mask AP (COCOeval segm) of the model in RUN_DIR against GT_JSON's amodal masks."""
    from amodalize.check.maskrcnn import evaluate_run, summarize_seeds

    _, device = _maskrcnn_config(None, device)
    metrics = evaluate_run(run_dir, gt_json, images_dir, device)
    if as_json:
        click.echo(json.dumps(metrics))
        return
    row = summarize_seeds([{"seed": None, **metrics}])
    console.print(_ap_table({run_dir.name: row}, f"{run_dir.name} vs {gt_json.name}"))


@maskrcnn.command("compare")
@click.argument("label_files", nargs=-1, required=True, type=EXISTING_FILE)
@click.option("--gt", "gt_json", required=True, type=EXISTING_FILE, help="Ground truth with amodal masks.")
@click.option(
    "--gt-images-dir",
    type=EXISTING_DIR,
    default=None,
    help="Folder of the GT images (default: --images-dir).",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=OUT_DIR,
    help="One run per label file, compare.json, compare.png.",
)
@click.option(
    "--base",
    type=EXISTING_FILE,
    default=None,
    help="Train one model on these labels first (e.g. the modal file every user has) and start every run from "
    "it: paired runs that differ only in what the label files teach.",
)
@click.option(
    "--base-iters", type=click.IntRange(min=1), default=None, help="Iterations of the --base model [default: --iters]."
)
@click.option(
    "--base-lr",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Learning rate of the --base model [default: --lr]; fine-tuning from it usually wants a lower --lr.",
)
@click.option(
    "--seeds",
    type=click.IntRange(min=1),
    default=1,
    help="Runs per label file (seeds --seed, --seed+1, ...): the table shows their mean and spread (max - min).",
)
@_maskrcnn_options
def maskrcnn_compare(
    label_files: tuple[Path, ...],
    gt_json: Path,
    gt_images_dir: Path | None,
    out_dir: Path,
    base: Path | None,
    base_iters: int | None,
    base_lr: float | None,
    seeds: int,
    images_dir: Path,
    arch: str | None,
    device: str,
    **fields: object,
) -> None:
    """Train one Mask R-CNN per label file with identical seeds and schedule; print the AP table.

    Beside AP over every object: AP, box AP and mean IoU over the occluded objects alone, where
    label sources differ, and the mean IoU of masks predicted on the ground-truth boxes.

    Example (the paper's Table 4 on your data):

    \b
        amodalize maskrcnn compare raw.json convex_r.json pcnet.json gt_train.json --gt gt_test.json \\
            --images-dir train/ --gt-images-dir test/ --out runs/compare
    """
    from amodalize.check.maskrcnn import compare, paired_differences

    if fields["heads_only"] and base is None:
        raise click.UsageError("--heads-only fine-tunes a shared start: give its labels with --base")
    cfg, device = _maskrcnn_config(arch, device, **fields)
    with progress_bar() as bar:
        task = bar.add_task("", total=cfg.iters)

        def run(name: str, iters: int) -> None:
            bar.reset(task, total=iters, description=f"Mask R-CNN on {name}")

        def step(record: dict) -> None:
            bar.update(task, completed=record["step"])

        rows = compare(
            list(label_files),
            gt_json,
            images_dir,
            gt_images_dir or images_dir,
            out_dir,
            cfg,
            seeds=seeds,
            base=base,
            base_iters=base_iters or cfg.iters,
            base_lr=base_lr,
            device=device,
            on_run=run,
            on_step=step,
        )
    console.print(_ap_table(rows, f"amodal mask AP on {gt_json.name} ({cfg.arch}, {cfg.iters} iterations)"))
    if len(rows) > 1:
        title = f"minus {next(iter(rows))}, seed by seed (same seeds, same image order)"
        console.print(_ap_table(paired_differences(rows), title))
    console.print(f"wrote {out_dir / 'compare.json'} and {out_dir / 'compare.png'}", soft_wrap=True)
