"""`amodalize train`: PCNet-M or PCNet-C, self-supervised."""

from __future__ import annotations

from pathlib import Path

import click

from amodalize.cli.options import (
    DEVICE_OPTION,
    EXISTING_FILE,
    console,
    images_dir_option,
    progress_bar,
    run_dir_option,
    torchrun_world,
)


@click.command()
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
    help="A preset (cpu-small, general, cocoa, kins; pcnet_c/cpu-small, pcnet_c/cocoa) or a YAML file. "
    "Default for PCNet-M: on a CPU the cpu-small model fine-tuned from the shipped 'general' for 300 steps "
    "(see --init); on CUDA cocoa (the paper's schedule) from scratch. PCNet-C: pcnet_c/cpu-small on a CPU, "
    "pcnet_c/cocoa on CUDA.",
)
@images_dir_option("PCNet-C: folder of the images of DATA.")
@click.option(
    "--perceptual-weights",
    type=EXISTING_FILE,
    default=None,
    help="PCNet-C: a local torchvision VGG16 state dict; adds the perceptual and style losses (else skipped).",
)
@run_dir_option("Run directory: config.yaml, checkpoint.pt, log.jsonl, val_grid.png.")
@click.option("--iters", type=click.IntRange(min=1), default=None, help="Override optim.iters.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Override optim.batch_size (global).")
@DEVICE_OPTION
@click.option("--resume", is_flag=True, help="Continue the checkpoint in --out exactly where it stopped.")
@click.option(
    "--init",
    default=None,
    metavar="NAME|PATH",
    help="PCNet-M: start from these weights (a shipped model such as 'general', with --config cpu-small, or a "
    "checkpoint): fine-tuning. 'none': from scratch. Default: without --config on a CPU, 'general' for 300 "
    "steps (measured better than the full preset from scratch); else from scratch.",
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
    from amodalize.config import ContentConfig, TrainConfig, default_init, default_preset, load_config, preset_note
    from amodalize.infer.batcher import resolve_device

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
    show = torchrun_world()[1] == 0
    announce, tune = config_path is None and show, None
    if config_path is None:
        config_path = default_preset(resolve_device(device).type, kind)
        reshaped = any(o.startswith(("model.", "data.input_size")) for o in overrides)  # the shipped weights won't fit
        tune = default_init(config_path) if init is None and not content and not reshaped else None
        if tune:
            init, steps = tune
            overrides = (f"optim.iters={steps}", *overrides)
    cfg = load_config(config_path, [*overrides, *extra], kind)
    if announce:
        if tune:
            note = f"fine-tuning the shipped model {init!r} for {cfg.optim.iters:,} steps (--init none: from scratch)"
        else:
            note = preset_note(config_path, kind)
        console.print(f"no --config: using the preset {config_path} ({note})", soft_wrap=True)
    if init == "none":
        init = None
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
            from amodalize.train.loop import MIN_HELD_OUT, TRAINED_CHECKPOINT
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
        chosen = metrics.get("selection")
        if chosen:
            trained, start = chosen["trained"], chosen["start"]
            kept = (
                f"kept the model it started from ({init}); the fine-tuned one is in {run_dir / TRAINED_CHECKPOINT}"
                if chosen["kept"] == "start"
                else "kept the fine-tuned model"
            )
            masks = (
                f"{chosen['masks']} held-out masks"
                if chosen["held_out"]
                else f"all {chosen['masks']} masks (fewer than {MIN_HELD_OUT} held out, so the fine-tuned model "
                "has trained on most of them, which favours it)"
            )
            console.print(
                f"self-check on the same synthetic occlusions of {masks}: fine-tuned order accuracy "
                f"{100 * trained['order_acc']:.1f}, IoU {100 * trained['iou']:.1f}; started from order accuracy "
                f"{100 * start['order_acc']:.1f}, IoU {100 * start['iou']:.1f}: {kept}",
                soft_wrap=True,
            )
