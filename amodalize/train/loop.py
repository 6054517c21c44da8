"""PCNet-M training: the model, its loss, validation and calibration, on the shared engine
(``train.engine``: steps, checkpoints, resume, log, DistributedDataParallel).

Run it directly (``train(cfg, paths, run_dir)``) or through ``amodalize train``; under
``torchrun`` every process takes an equal slice of each global batch and only rank 0 writes.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from amodalize.config import AUTO, DataConfig, TrainConfig, to_dict
from amodalize.data.bank import build_bank
from amodalize.data.formats import read_dataset
from amodalize.data.gaps import estimate_gap, modal_groups
from amodalize.data.records import Dataset
from amodalize.errors import InputError
from amodalize.infer.batcher import Completer, default_batch_size
from amodalize.infer.calibrate import calibrate
from amodalize.models.pcnet_m import category_factor, foreground_probability, load_pcnet_m, pack_input
from amodalize.models.registry import file_sha256, resolve_checkpoint
from amodalize.models.unet import UNet, init_weights
from amodalize.train.engine import (
    CHECKPOINT,
    Schedule,
    begin_log,
    check_resumable,
    distributed,
    log_record,
    lr_factor,
    optimise,
    rank_loader,
    read_checkpoint,
    restore_checkpoint,
    run_steps,
    save_checkpoint,
    start_run,
    wait_for_all,
)
from amodalize.train.partial import PartialCompletionSet, split_instances, validation_samples

# Where a fine-tuning run keeps its fine-tuned model when the model it started from scored better
# (checkpoint.pt then holds the starting weights, calibrated on the run's data).
TRAINED_CHECKPOINT = "checkpoint-trained.pt"
# Held-out instances needed to calibrate (and self-check) on them alone rather than on all.
MIN_HELD_OUT = 50


def weighted_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, eraser: torch.Tensor, weight: float
) -> torch.Tensor:
    """2-class CE averaged over all pixels, pixels inside the eraser weighted ``weight`` (§2.6)."""
    ce = F.cross_entropy(logits.float(), target.long(), reduction="none")
    return (ce * (1 + (weight - 1) * eraser.float())).mean()


def build_model(cfg: TrainConfig) -> UNet:
    """The PCNet-M UNet of ``cfg``, initialised with ``cfg.run.seed``."""
    torch.manual_seed(cfg.run.seed)
    model = UNet(2, 2, widen=cfg.model.widen)
    init_weights(model, cfg.model.init)
    return model


def build_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """SGD with momentum or Adam, as configured."""
    o = cfg.optim
    if o.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=o.lr, weight_decay=o.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)


def validate(
    model: torch.nn.Module, batch: dict, device: torch.device, categories: str = "none", chunk: int = 64
) -> dict:
    """Partial-completion quality on held-out samples, pooled over pixels.

    iou / iou_at_0.2: predicted vs target masks (thresholds 0.5 and the amodal 0.2);
    raw_iou: the erased input vs target (no completion); eraser_iou: inside the eraser only;
    bg_prob: mean P(fg) over target background (high = badly calibrated). ``categories``: how
    the model takes the samples' category ids (``model.categories``).
    """
    was_training = model.training
    model.eval()
    probs = []
    with torch.inference_mode():
        for k in range(0, len(batch["target"]), chunk):
            part = slice(k, k + chunk)
            x = pack_input(
                batch["modal"][part], batch["eraser"][part], category_factor(categories, batch["category"][part])
            )
            probs.append(foreground_probability(model, x.to(device)).cpu())
    model.train(was_training)
    prob = torch.cat(probs)
    target, modal, eraser = batch["target"].bool(), batch["modal"].bool(), batch["eraser"].bool()

    def iou(pred: torch.Tensor, region: torch.Tensor | None = None) -> float:
        t = target if region is None else target & region
        p = pred if region is None else pred & region
        union = (p | t).sum().item()
        return (p & t).sum().item() / union if union else 1.0

    return {
        "iou": iou(prob > 0.5),
        "iou_at_0.2": iou(prob > 0.2),
        "raw_iou": iou(modal),
        "eraser_iou": iou(prob > 0.5, eraser),
        "bg_prob": prob[~target].mean().item(),
    }


def save_grid(path: Path, batch: dict, prob: torch.Tensor, n: int = 8) -> None:
    """PNG grid, one row per sample: input | eraser | prediction | target."""
    import cv2

    rows = []
    for k in range(min(n, len(prob))):
        tiles = [
            batch["modal"][k].numpy() * 255,
            batch["eraser"][k].numpy() * 255,
            prob[k].numpy() * 255,
            batch["target"][k].numpy() * 255,
        ]
        rows.append(np.concatenate([np.pad(t.astype(np.uint8), 2, constant_values=128) for t in tiles], axis=1))
    cv2.imwrite(str(path), np.concatenate(rows, axis=0))


def train(
    cfg: TrainConfig,
    data_paths: list[Path],
    run_dir: Path,
    *,
    resume: bool = False,
    device: str = "auto",
    init: str | Path | None = None,
    on_step: Callable[[dict], None] | None = None,
    on_ready: Callable[[dict], None] | None = None,
) -> dict:
    """Train PCNet-M on the instances of ``data_paths``; returns the last validation metrics.

    ``init`` (a shipped model's name or a PCNet-M checkpoint) starts from its weights instead of
    a fresh initialisation (fine-tuning).

    ``on_ready(info)`` is called once before the first step ({start, iters, instances}),
    ``on_step(record)`` after every step ({step, loss, lr, samples_per_s}); a KeyboardInterrupt
    raised anywhere inside the loop saves a checkpoint first.
    """
    dev, rank, world = start_run(run_dir, resume, device, cfg.optim.batch_size, cfg.run.threads)
    ckpt_path = run_dir / CHECKPOINT
    datasets = [read_dataset(p) for p in data_paths]
    bank = build_bank(datasets, workers=-1)
    data_cfg, gap = resolve_gap(cfg.data, datasets)
    train_ids, val_ids = split_instances(bank, cfg.data, cfg.run.seed)
    model = build_model(cfg)
    started_from = initial_weights(model, init, cfg) if init is not None and not resume else None
    model = model.to(dev)
    optimizer = build_optimizer(cfg, model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(cfg, s))
    parts = {"model": model, "optimizer": optimizer, "lr_scheduler": scheduler}
    start = 0
    if resume:
        ckpt = read_checkpoint(ckpt_path, "pcnet-m")
        check_resumable(ckpt, cfg, bank.fingerprint, ckpt_path)
        started_from = ckpt.get("init")
        start = restore_checkpoint(ckpt, parts)
    cuda = dev.type == "cuda"
    if cuda and cfg.run.channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = distributed(model, dev)

    writer = rank == 0
    if writer:
        begin_log(run_dir, cfg, start, dev)
        log_record(run_dir, {"step": start, "gap": gap})
    calibration: dict = {}
    categories_seen = sorted({int(c) for c in bank.categories})

    def checkpoint(step: int) -> None:
        if writer:
            save_checkpoint(
                ckpt_path,
                "pcnet-m",
                step,
                parts,
                config=to_dict(cfg),
                data_fingerprint=bank.fingerprint,
                gap=gap,
                calibration=calibration.get("record"),
                init=started_from,
                categories_seen=categories_seen,
                selection=calibration.get("selection"),
            )

    data = PartialCompletionSet(bank, train_ids, train_ids, data_cfg, cfg.run.seed)
    loader = rank_loader(data, cfg, start, rank, world, pin=cuda)
    val_batch = validation_samples(bank, val_ids, train_ids, data_cfg, cfg.run.seed, cfg.run.val_samples)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda and cfg.run.amp else nullcontext()
    if on_ready:
        on_ready(
            {
                "start": start,
                "iters": cfg.optim.iters,
                "instances": len(bank),
                "val_instances": len(val_ids),
                "gap": gap["gap"],
                "recipe_gap": gap["recipe"],
            }
        )

    def step_fn(batch: dict, step: int) -> dict:
        category = category_factor(cfg.model.categories, batch["category"])
        x = pack_input(batch["modal"], batch["eraser"], category).to(dev, non_blocking=True)
        if cuda and cfg.run.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        target, eraser = batch["target"].to(dev), batch["eraser"].to(dev)
        with autocast:
            logits = net(x)
        loss = weighted_cross_entropy(logits, target, eraser, cfg.data.inmask_weight)
        optimise(loss, optimizer, scheduler, step, "lower optim.lr")
        return {"loss": loss.item(), "lr": optimizer.param_groups[0]["lr"]}

    net.train()
    step, metrics = run_steps(
        loader,
        start,
        step_fn,
        Schedule.of(cfg),
        run_dir,
        writer,
        lambda: validate(model, val_batch, dev, cfg.model.categories),
        checkpoint,
        on_step,
    )
    if writer:
        model.eval()
        with torch.inference_mode():
            category = category_factor(cfg.model.categories, val_batch["category"][:8])
            x = pack_input(val_batch["modal"][:8], val_batch["eraser"][:8], category).to(dev)
            prob = foreground_probability(model, x).cpu()
        save_grid(run_dir / "val_grid.png", val_batch, prob)
        if cfg.run.calibration_samples:
            # held-out targets where there are enough of them; a small dataset calibrates on all (on
            # the standard sets, its 24-40 held-out masks alone chose worse: docs/measurements.md)
            held_out = len(val_ids) >= MIN_HELD_OUT
            targets = val_ids if held_out else np.concatenate([train_ids, val_ids])

            def calibrated(net: torch.nn.Module, fusion: bool = True) -> dict:
                completer = Completer(
                    net,
                    cfg.data.input_size,
                    device=dev,
                    batch_size=default_batch_size(dev, cfg.data.input_size),
                    categories=cfg.model.categories,
                )
                args = (bank, targets, train_ids, data_cfg, gap["gap"], completer, cfg.run.seed)
                return calibrate(*args, cfg.run.calibration_samples, fusion=fusion).to_json()

            calibration["record"] = calibrated(model)
            log_record(run_dir, {"step": step, "calibration": calibration["record"]})
            if started_from is not None:
                # the same synthetic occlusions of the held-out masks, scored with the model the run
                # started from: fine-tuning must not make a user's model worse without saying so
                path, _ = resolve_checkpoint(started_from["shipped_model"] or started_from["path"])
                start = load_pcnet_m(path).model.to(dev)
                selection = select_model(calibration["record"], calibrated(start, fusion=False))
                selection.update(masks=int(len(targets)), held_out=held_out)
                log_record(run_dir, {"step": step, "selection": selection})
                calibration["selection"] = selection
                if selection["kept"] == "start":
                    checkpoint(step)  # the fine-tuned model, calibrated, kept beside
                    os.replace(ckpt_path, run_dir / TRAINED_CHECKPOINT)
                    model.load_state_dict(start.state_dict())
                    calibration["record"] = calibrated(model)
            checkpoint(step)
    wait_for_all()
    return {
        **metrics,
        "gap": gap["gap"],
        "calibration": calibration.get("record"),
        "selection": calibration.get("selection"),
    }


def select_model(trained: dict, start: dict) -> dict:
    """Which of the fine-tuned model and the one it started from to keep: the higher ordering
    accuracy + completion IoU on the same synthetic occlusions (their calibration records); the
    fine-tuned one on a tie."""
    scores = {name: {k: rec[k] for k in ("order_acc", "iou")} for name, rec in (("trained", trained), ("start", start))}
    total = {name: s["order_acc"] + s["iou"] for name, s in scores.items()}
    return {**scores, "kept": "start" if total["start"] > total["trained"] else "trained"}


def initial_weights(model: UNet, init: str | Path, cfg: TrainConfig) -> dict:
    """Load the weights of ``init`` (shipped model name or checkpoint) into ``model``; returns what
    was loaded (path, shipped model name, SHA-256)."""
    path, shipped = resolve_checkpoint(init)
    loaded = load_pcnet_m(path)
    if loaded.input_size != cfg.data.input_size:
        raise InputError(path, f"was trained at input size {loaded.input_size}, the config says {cfg.data.input_size}")
    try:
        model.load_state_dict(loaded.model.state_dict())
    except RuntimeError:
        raise InputError(path, f"does not fit a UNet of model.widen={cfg.model.widen} (use its own config)") from None
    return {"path": str(path), "shipped_model": shipped, "sha256": file_sha256(path)}


def resolve_gap(data: DataConfig, datasets: list[Dataset]) -> tuple[DataConfig, dict]:
    """The gap measured between the datasets' neighbouring masks, and ``data`` with the recipe's
    gap decided ('auto': the measured one). Returns (data, ``{"gap": measured px, "measured": the
    estimate, "recipe": the recipe's gap}``)."""
    measured = estimate_gap([group for ds in datasets for group in modal_groups(ds)])
    recipe = float(measured.gap) if data.gap == AUTO else float(data.gap)
    record = {"gap": measured.gap, "measured": measured.to_json(), "recipe": recipe}
    return dataclasses.replace(data, gap=recipe), record
