"""PCNet-C training: the partial-completion recipe on image crops, L1 + adversarial (+ perceptual,
style with local VGG16 weights) losses, the generator updated first, then the discriminator.

Checkpoints, resume, progress callbacks, logging and torchrun behave as in PCNet-M training
(``train/loop.py``, whose helpers this module uses).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from amodalize.config import ContentConfig, LossConfig, to_dict
from amodalize.data.bank import build_bank
from amodalize.data.formats import read_dataset
from amodalize.data.images import ImageCache, check_images
from amodalize.infer.batcher import Painter
from amodalize.models.pcnet_c import (
    PatchDiscriminator,
    VGG16Features,
    build_generator,
    load_vgg16,
    pack_content_input,
)
from amodalize.models.pcnet_m import category_factor
from amodalize.train.engine import (
    CHECKPOINT,
    Schedule,
    begin_log,
    check_resumable,
    distributed,
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


def gram(f: torch.Tensor) -> torch.Tensor:
    """Gram matrices ``[B, C, C]`` of features ``[B, C, H, W]``, divided by C*H*W."""
    b, c, h, w = f.shape
    flat = f.reshape(b, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


def generator_losses(
    out: torch.Tensor,
    image: torch.Tensor,
    valid: torch.Tensor,
    fake_logits: torch.Tensor,
    weights: LossConfig,
    vgg: VGG16Features | None = None,
) -> dict[str, torch.Tensor]:
    """The weighted generator loss terms and their ``total`` (reference protocol §5).

    out, image: generator output and target, normalised ``[B, 3, S, S]``; valid: ``[B, 1, S, S]``
    (0 in the hole); fake_logits: the discriminator on the output. Perceptual and style terms are
    computed only with ``vgg``.
    """
    out, fake_logits = out.float(), fake_logits.float()
    hole = 1 - valid
    comp = valid * image + hole * out
    terms = {
        "hole": weights.hole * F.l1_loss(hole * out, hole * image),
        "valid": weights.valid * F.l1_loss(valid * out, valid * image),
        "adversarial": weights.adversarial
        * F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits)),
    }
    ring = F.max_pool2d(hole, 3, 1, 1)  # the hole grown by one pixel (PConv's TV region)
    dx = (comp[..., :, 1:] - comp[..., :, :-1]).abs() * ring[..., :, 1:]
    dy = (comp[..., 1:, :] - comp[..., :-1, :]).abs() * ring[..., 1:, :]
    terms["tv"] = weights.tv * (dx.mean() + dy.mean())
    if vgg is not None:
        target = vgg(image)
        perceptual = style = 0.0
        for produced in (vgg(out), vgg(comp)):
            for p, t in zip(produced, target):
                perceptual = perceptual + F.l1_loss(p, t)
                style = style + F.l1_loss(gram(p), gram(t))
        terms["perceptual"] = weights.perceptual * perceptual
        terms["style"] = weights.style * style
    terms["total"] = sum(terms.values())
    return terms


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating GAN loss of the discriminator: (BCE(real, 1) + BCE(fake, 0)) / 2."""
    real_logits, fake_logits = real_logits.float(), fake_logits.float()
    real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return (real + fake) / 2


def paint(generator: torch.nn.Module, batch: dict, device: torch.device, categories: str = "none") -> np.ndarray:
    """Composite RGB uint8 ``[B, S, S, 3]`` of a sample batch: the input outside the hole, PCNet-C
    inside (``categories``: how the generator takes category ids, ``model.categories``)."""
    was_training = generator.training
    painter = Painter(generator, device=device, batch_size=64, categories=categories)
    rgb = np.ascontiguousarray(batch["rgb"].permute(0, 2, 3, 1).numpy())
    out = painter(rgb, batch["hole"].numpy(), batch["modal"].numpy(), batch["category"].numpy())
    generator.train(was_training)
    return out


def baseline_fills(batch: dict) -> tuple[np.ndarray, np.ndarray]:
    """The two model-free fills of each hole, RGB uint8 ``[B, S, S, 3]``: the mean colour of the
    object's visible pixels (of the whole valid crop when none is visible), and OpenCV's Telea
    inpainting (radius 3)."""
    rgb = batch["rgb"].permute(0, 2, 3, 1).numpy()
    holes, modal = batch["hole"].numpy().astype(bool), batch["modal"].numpy().astype(bool)
    mean_fill, inpainted = rgb.copy(), rgb.copy()
    for k in range(len(rgb)):
        source = modal[k] if modal[k].any() else ~holes[k]
        mean_fill[k][holes[k]] = rgb[k][source].mean(axis=0).round().astype(np.uint8)
        blanked = np.where(holes[k][..., None], 0, rgb[k]).astype(np.uint8)
        inpainted[k] = cv2.inpaint(blanked, holes[k].astype(np.uint8), 3, cv2.INPAINT_TELEA)
    return mean_fill, inpainted


def fill_errors(batch: dict) -> dict:
    """``mean_fill_l1`` and ``inpaint_l1``: the mean absolute error inside the holes of the two
    model-free fills (0-255 RGB, pooled over pixels and channels), and ``hole_pixels``."""
    mean_fill, inpainted = baseline_fills(batch)
    return {
        "mean_fill_l1": hole_l1(batch, mean_fill),
        "inpaint_l1": hole_l1(batch, inpainted),
        "hole_pixels": int(batch["hole"].sum()),
    }


def hole_l1(batch: dict, filled: np.ndarray) -> float:
    """Mean absolute error of ``filled`` (RGB uint8 ``[B, S, S, 3]``) against the batch's truth inside
    its holes, 0-255 units pooled over pixels and channels (0 without holes)."""
    hole = batch["hole"].numpy().astype(bool)
    if not hole.any():
        return 0.0
    truth = batch["rgb"].permute(0, 2, 3, 1).numpy().astype(np.float32)
    return float(np.abs(filled.astype(np.float32) - truth)[hole].mean())


def validate_content(
    generator: torch.nn.Module, batch: dict, device: torch.device, fills: dict | None = None, categories: str = "none"
) -> dict:
    """``hole_l1`` of PCNet-C beside ``fill_errors(batch)`` (pass ``fills`` when already computed)."""
    return {"hole_l1": hole_l1(batch, paint(generator, batch, device, categories)), **(fills or fill_errors(batch))}


def save_content_grid(path: Path, batch: dict, painted: np.ndarray, n: int = 8) -> None:
    """PNG grid, one row per sample: input with the hole blanked | hole | PCNet-C | truth."""
    rows = []
    for k in range(min(n, len(painted))):
        truth = batch["rgb"][k].permute(1, 2, 0).numpy()
        hole = batch["hole"][k].numpy().astype(bool)
        tiles = [np.where(hole[..., None], 0, truth), np.repeat(hole[..., None] * 255, 3, axis=2), painted[k], truth]
        rows.append(
            np.concatenate(
                [np.pad(t.astype(np.uint8), ((2, 2), (2, 2), (0, 0)), constant_values=128) for t in tiles], axis=1
            )
        )
    cv2.imwrite(str(path), np.concatenate(rows, axis=0)[..., ::-1])


def build_networks(cfg: ContentConfig) -> tuple[torch.nn.Module, PatchDiscriminator]:
    """Generator and discriminator of ``cfg``, initialised with ``cfg.run.seed``."""
    torch.manual_seed(cfg.run.seed)
    return build_generator(to_dict(cfg)["model"]), PatchDiscriminator(4, base=cfg.model.disc_base)


def train_content(
    cfg: ContentConfig,
    data_paths: list[Path],
    images_dir: Path,
    run_dir: Path,
    *,
    resume: bool = False,
    device: str = "auto",
    perceptual_weights: Path | None = None,
    on_step: Callable[[dict], None] | None = None,
    on_ready: Callable[[dict], None] | None = None,
) -> dict:
    """Train PCNet-C on the instances of ``data_paths`` with images from ``images_dir``; returns the
    last validation metrics (see ``validate_content``). Callbacks as in ``loop.train``."""
    dev, rank, world = start_run(run_dir, resume, device, cfg.optim.batch_size, cfg.run.threads)
    ckpt_path = run_dir / CHECKPOINT
    datasets = [read_dataset(p) for p in data_paths]
    for ds in datasets:
        check_images(ds.images, images_dir)
    vgg = load_vgg16(perceptual_weights).to(dev) if perceptual_weights else None
    bank = build_bank(datasets, workers=-1)
    train_ids, val_ids = split_instances(bank, cfg.data, cfg.run.seed)
    generator, discriminator = build_networks(cfg)
    generator, discriminator = generator.to(dev), discriminator.to(dev)
    betas = tuple(cfg.optim.betas)
    opt_g = torch.optim.Adam(generator.parameters(), lr=cfg.optim.lr, betas=betas)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=cfg.optim.d_lr, betas=betas)
    sched_g = torch.optim.lr_scheduler.LambdaLR(opt_g, lambda s: lr_factor(cfg, s))
    sched_d = torch.optim.lr_scheduler.LambdaLR(opt_d, lambda s: lr_factor(cfg, s))
    parts = {
        "generator": generator,
        "discriminator": discriminator,
        "opt_g": opt_g,
        "opt_d": opt_d,
        "sched_g": sched_g,
        "sched_d": sched_d,
    }
    start = 0
    if resume:
        ckpt = read_checkpoint(ckpt_path, "pcnet-c")
        check_resumable(ckpt, cfg, bank.fingerprint, ckpt_path)
        start = restore_checkpoint(ckpt, parts)
    cuda = dev.type == "cuda"
    net_g, net_d = distributed(generator, dev), distributed(discriminator, dev)

    writer = rank == 0
    if writer:
        begin_log(run_dir, cfg, start, dev)

    def checkpoint(step: int) -> None:
        if writer:
            save_checkpoint(
                ckpt_path,
                "pcnet-c",
                step,
                parts,
                config=to_dict(cfg),
                data_fingerprint=bank.fingerprint,
                perceptual=vgg is not None,
            )

    images = ImageCache(images_dir)
    data = PartialCompletionSet(bank, train_ids, train_ids, cfg.data, cfg.run.seed, images=images)
    loader = rank_loader(data, cfg, start, rank, world, pin=cuda)
    val_batch = validation_samples(bank, val_ids, train_ids, cfg.data, cfg.run.seed, cfg.run.val_samples, images)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda and cfg.run.amp else nullcontext()
    if on_ready:
        on_ready({"start": start, "iters": cfg.optim.iters, "instances": len(bank), "val_instances": len(val_ids)})

    fills = fill_errors(val_batch)  # the model-free fills of the fixed validation batch never change

    def validate_now() -> dict:
        return validate_content(generator, val_batch, dev, fills, cfg.model.categories)

    hint = "lower optim.lr / optim.d_lr"

    def step_fn(batch: dict, step: int) -> dict:
        x, valid, image = (
            t.to(dev, non_blocking=True)
            for t in pack_content_input(
                batch["rgb"], batch["hole"], batch["modal"], category_factor(cfg.model.categories, batch["category"])
            )
        )
        modal = x[:, 3:]  # the erased modal channel, the discriminator's condition
        with autocast:
            out = net_g(x, valid)
            fake_logits = net_d(torch.cat([out, modal], dim=1))
        terms = generator_losses(out, image, valid, fake_logits, cfg.loss, vgg)
        optimise(terms["total"], opt_g, sched_g, step, hint)
        with autocast:
            pair = torch.cat([torch.cat([image, modal], 1), torch.cat([out.detach(), modal], 1)])
            logits = net_d(pair)
        d_loss = discriminator_loss(*logits.chunk(2))
        optimise(d_loss, opt_d, sched_d, step, hint)
        return {
            "loss": terms["total"].item(),
            **{f"loss_{k}": v.item() for k, v in terms.items() if k != "total"},
            "d_loss": d_loss.item(),
            "lr": opt_g.param_groups[0]["lr"],
        }

    net_g.train()
    net_d.train()
    schedule = Schedule.of(cfg)
    _, metrics = run_steps(loader, start, step_fn, schedule, run_dir, writer, validate_now, checkpoint, on_step)
    if writer:
        save_content_grid(run_dir / "val_grid.png", val_batch, paint(generator, val_batch, dev, cfg.model.categories))
    wait_for_all()
    return metrics
