"""The Mask R-CNN validation hook: train an instance segmentation model on a label file and score
its masks against amodal ground truth with COCOeval (the paper's Table 4 protocol, reference
protocol §6.4). torchvision is an optional dependency, imported only here and only when used.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch
from pycocotools import mask as mask_utils

from amodalize.check.amodal_ap import coco_ap, score
from amodalize.data.formats import read_dataset
from amodalize.data.images import check_images, read_rgb, write_image_atomic
from amodalize.data.masks import decode_crop, rle_area, rle_bbox
from amodalize.data.records import Dataset
from amodalize.data.writer import write_json_atomic
from amodalize.errors import AmodalizeError, InputError, TrainingError
from amodalize.train.engine import (
    CHECKPOINT,
    Schedule,
    distributed,
    optimise,
    read_checkpoint,
    restore_checkpoint,
    run_steps,
    save_checkpoint,
    start_run,
    truncate_log,
    wait_for_all,
)

ARCHS = ("mnv3-fpn", "r50-fpn")


def require_torchvision() -> object:
    """The torchvision module, or an error that says how to install it."""
    try:
        import torchvision
        from torchvision.models import detection  # noqa: F401
    except ImportError:
        raise AmodalizeError(
            "the Mask R-CNN hook needs torchvision: pip install 'amodalize[maskrcnn]' "
            "(a torchvision build that matches your torch)"
        ) from None
    return torchvision


# Box AP (0-1) under which a trained detector has not begun to detect (docs/measurements.md, "Does
# the Mask R-CNN check learn on any machine?"): `make demo-maskrcnn`'s shared start scored 0.013
# where it had not learned (600 steps) and 0.18-0.19 where it had (1,200-1,500 steps).
LEARNED_FLOOR = 0.05
# Images of the check file a detector is checked on, at most (its first ones).
CHECK_IMAGES = 50


@dataclass
class MaskRCNNConfig:
    """One Mask R-CNN training run.

    arch: 'mnv3-fpn' (MobileNetV3-Large FPN, slim heads: the CPU default) or 'r50-fpn' (ResNet-50
        FPN as torchvision builds it: the GPU default). Both start from random weights.
    image_size: the side images are resized to (min_size = max_size); 0 = the data's largest side.
    iters: training iterations.
    batch_size: images per iteration.
    lr: SGD learning rate (momentum 0.9, weight decay 1e-4), linear warm-up then cosine decay.
    warmup: warm-up iterations.
    seed: seeds initialisation and image order.
    checkpoint_every: iterations between checkpoints.
    threads: torch CPU threads (0: torch's default).
    clip_norm: gradients are clipped to this global norm (without it r50-fpn from random weights
        diverged to NaN within 10 steps at lr 0.02, measured on CPU and on an H200).
    heads_only: train the box and mask heads alone, the backbone and the region proposals kept as
        the start left them (fine-tuning: every label source then sees the same features and
        proposals, and learns only what its labels teach).
    learned_floor: the box AP (0-1) a trained detector must reach on the scenes it is checked on
        (``check_learned``), else the run is reported as one that did not learn; 0: no check (a
        smoke run of a few steps).
    """

    arch: str = "mnv3-fpn"
    image_size: int = 0
    iters: int = 1000
    batch_size: int = 2
    lr: float = 0.02
    warmup: int = 100
    seed: int = 0
    checkpoint_every: int = 200
    threads: int = 0
    clip_norm: float = 10.0
    heads_only: bool = False
    learned_floor: float = LEARNED_FLOOR


# The MobileNetV3 stages (strides 4, 8, 16, 32, 32) whose features the mnv3-fpn pyramid uses.
MNV3_STAGES = (1, 2, 3, 4, 5)


def build_model(arch: str, num_classes: int, image_size: int, backbone_weights: Path | None = None) -> torch.nn.Module:
    """A torchvision Mask R-CNN with ``num_classes`` classes (background included), random init.

    ``backbone_weights`` loads a local torchvision state dict into the backbone body (nothing is
    downloaded).
    """
    require_torchvision()
    from torchvision.models.detection import MaskRCNN, maskrcnn_resnet50_fpn
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import mobilenet_backbone
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

    if arch == "r50-fpn":
        model = maskrcnn_resnet50_fpn(
            weights=None, weights_backbone=None, num_classes=num_classes, min_size=image_size, max_size=image_size
        )
    elif arch == "mnv3-fpn":
        # GroupNorm: trained from scratch with 2 images per batch, BatchNorm statistics are noise.
        # Every stage from stride 4 feeds the FPN: torchvision's default (the last two, both at
        # stride 32 here) leaves a 4x4 map of a 128-px scene, and on 128-px scenes the stride-4
        # pyramid raised box AP after 600 iterations from 3.0 to 9.9 (docs/measurements.md).
        backbone = mobilenet_backbone(
            backbone_name="mobilenet_v3_large",
            weights=None,
            fpn=True,
            trainable_layers=6,
            returned_layers=list(MNV3_STAGES),
            norm_layer=functools.partial(torch.nn.GroupNorm, 8),
        )
        width = backbone.out_channels
        levels = len(MNV3_STAGES) + 1  # the FPN adds a max-pooled level
        model = MaskRCNN(
            backbone,
            num_classes=None,
            min_size=image_size,
            max_size=image_size,
            rpn_anchor_generator=AnchorGenerator(
                tuple((8 * 2**k,) for k in range(levels)), ((0.5, 1.0, 2.0),) * levels
            ),
            rpn_post_nms_top_n_train=500,
            rpn_post_nms_top_n_test=300,
            box_batch_size_per_image=128,
            box_head=TwoMLPHead(width * 7 * 7, 256),
            box_predictor=FastRCNNPredictor(256, num_classes),
            mask_head=MaskRCNNHeads(width, [64, 64], 1),
            mask_predictor=MaskRCNNPredictor(64, 64, num_classes),
        )
    else:
        raise ValueError(f"unknown arch {arch!r}; choose from {', '.join(ARCHS)}")
    if backbone_weights is not None:
        state = torch.load(backbone_weights, map_location="cpu", weights_only=True)
        missing, _ = model.backbone.body.load_state_dict(state, strict=False)
        if len(missing) == len(model.backbone.body.state_dict()):
            raise InputError(backbone_weights, f"no tensor fits the {arch} backbone")
    return model


class DetectionSet(torch.utils.data.Dataset):
    """Images with their instance masks for training: ``segmentation`` of any COCO-style file
    (amodal where the file carries amodal masks, else modal); crowd and empty masks skipped."""

    def __init__(self, dataset: Dataset, images_dir: Path, labels: dict[int, int]) -> None:
        self.dataset, self.images_dir, self.labels = dataset, images_dir, labels
        check_images(dataset.images, images_dir)

    def __len__(self) -> int:
        return len(self.dataset.images)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, dict]:
        image = self.dataset.images[k]
        tensor = torch.from_numpy(read_rgb(self.images_dir / image.file_name)).permute(2, 0, 1).float() / 255
        boxes, labels, masks = [], [], []
        for inst in self.dataset.by_image[image.id]:
            rle = inst.amodal if inst.amodal is not None else inst.modal
            if inst.iscrowd or rle_area(rle) == 0:
                continue
            crop = decode_crop(rle)
            x0, y0, x1, y1 = crop.window
            boxes.append([x0, y0, x1, y1])
            labels.append(self.labels[inst.category_id])
            full = np.zeros((image.height, image.width), np.uint8)
            full[y0:y1, x0:x1] = crop.mask
            masks.append(full)
        target = {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "masks": torch.from_numpy(np.stack(masks))
            if masks
            else torch.zeros((0, image.height, image.width), dtype=torch.uint8),
        }
        return tensor, target


def category_labels(dataset: Dataset) -> dict[int, int]:
    """Category id -> contiguous label 1..K (0 is background)."""
    ids = sorted({c["id"] for c in dataset.categories} | {i.category_id for i in dataset.instances})
    return {cid: k + 1 for k, cid in enumerate(ids)}


def _lr_factor(cfg: MaskRCNNConfig, step: int) -> float:
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    return 0.5 * (1 + math.cos(math.pi * (step - cfg.warmup) / max(1, cfg.iters - cfg.warmup)))


def train(
    cfg: MaskRCNNConfig,
    ann_path: Path,
    images_dir: Path,
    run_dir: Path,
    *,
    resume: bool = False,
    device: str = "cpu",
    backbone_weights: Path | None = None,
    init: Path | None = None,
    on_step: Callable[[dict], None] | None = None,
) -> dict:
    """Train Mask R-CNN on ``ann_path``; checkpoints, ``log.jsonl`` and ``config.json`` in ``run_dir``.
    Under torchrun each process takes its share of every batch (DistributedDataParallel) and the
    first one writes the files.

    ``init``: a run directory whose trained weights (same architecture and categories) the model
    starts from instead of random ones: fine-tuning, with a schedule of its own."""
    require_torchvision()
    kind = device if device == "auto" else torch.device(device).type  # each torchrun process takes its own GPU
    dev, rank, world = start_run(run_dir, resume, kind, cfg.batch_size, cfg.threads)
    dataset = read_dataset(ann_path)
    labels = category_labels(dataset)
    size = cfg.image_size or max(max(im.width, im.height) for im in dataset.images)
    data = DetectionSet(dataset, images_dir, labels)
    ckpt_path = run_dir / CHECKPOINT
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.arch, len(labels) + 1, size, backbone_weights).to(dev)
    if init is not None and not resume:
        start = torch.load(init / CHECKPOINT, map_location="cpu", weights_only=True)
        if start["config"]["arch"] != cfg.arch or start["labels"] != {str(k): v for k, v in labels.items()}:
            raise InputError(init, "was trained with another architecture or other categories")
        model.load_state_dict(start["model"])
    if cfg.heads_only:
        if init is None and not resume:
            raise ValueError("heads_only fine-tunes a trained start: give it as init")
        for p in [*model.backbone.parameters(), *model.rpn.parameters()]:
            p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(cfg, s))
    parts = {"model": model, "optimizer": optimizer, "lr_scheduler": scheduler}
    step = 0
    if resume:
        ckpt = read_checkpoint(ckpt_path, "maskrcnn")
        if ckpt["config"]["arch"] != cfg.arch or ckpt["labels"] != {str(k): v for k, v in labels.items()}:
            raise InputError(ckpt_path, "was trained with another architecture or other categories")
        step = restore_checkpoint(ckpt, parts)
    # built before anything is written: it waits for every process, so none finds the run directory
    # its first process has just made
    net = distributed(model, dev)
    meta = {
        "config": asdict(cfg),
        "image_size": size,
        "labels": {str(k): v for k, v in labels.items()},
        "annotations": str(ann_path),
        "init": str(init) if init else None,
    }
    writer = rank == 0
    if writer:
        if resume:
            truncate_log(run_dir / "log.jsonl", step)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(meta, indent=1))

    def step_fn(batch: list, step: int) -> dict:
        images = [b[0].to(dev) for b in batch]
        targets = [{key: v.to(dev) for key, v in b[1].items()} for b in batch]
        losses = net(images, targets)
        loss = sum(losses.values())
        optimise(loss, optimizer, scheduler, step, "lower --lr", clip_norm=cfg.clip_norm)
        return {"loss": loss.item(), **{k: v.item() for k, v in losses.items()}}

    def checkpoint(at: int) -> None:
        if writer:
            save_checkpoint(ckpt_path, "maskrcnn", at, parts, **meta)

    net.train()
    schedule = Schedule(cfg.iters, cfg.batch_size, checkpoint_every=cfg.checkpoint_every)
    batches = detection_batches(data, step, cfg, rank, world)
    _, last = run_steps(batches, step, step_fn, schedule, run_dir, writer, None, checkpoint, on_step)
    wait_for_all()
    return last


def detection_batches(
    data: DetectionSet, start: int, cfg: MaskRCNNConfig, rank: int = 0, world: int = 1
) -> Iterator[list]:
    """This process's share (``rank`` of ``world``) of the samples of steps ``start .. cfg.iters``:
    ``cfg.batch_size`` a step over all processes, taken in a seeded order that changes every
    len(data) steps (the same batches whether or not a run was resumed)."""
    share = cfg.batch_size // world
    for step in range(start, cfg.iters):
        order = np.random.default_rng([cfg.seed, step // len(data)]).permutation(len(data))
        k = step % len(data)
        yield [data[int(order[(k + j) % len(data)])] for j in range(rank * share, (rank + 1) * share)]


def check_learned(run_dir: Path, check: Path, images_dir: Path, floor: float, what: str, device: str = "cpu") -> float:
    """The box AP (0-1) of the detector in ``run_dir`` on the first CHECK_IMAGES images of the file
    ``check`` (its amodal boxes, or its masks' where it has none); raises TrainingError, naming
    ``what``, when it is under ``floor``."""
    model, labels = load_run(run_dir, device)
    gt = read_dataset(check)
    keep = gt.images[:CHECK_IMAGES]
    ids = {im.id for im in keep}
    insts = [replace(i, amodal=i.modal if i.amodal is None else i.amodal) for i in gt.instances if i.image_id in ids]
    shown = Dataset(gt.path, gt.format, keep, insts, gt.categories)
    ap = coco_ap(shown, predict(model, labels, shown, images_dir, device))["box_AP"]
    if ap < floor:
        raise TrainingError(
            f"{what} did not learn to detect: box AP {100 * ap:.1f}% on {len(keep)} images of {check.name}, under "
            f"the {100 * floor:g}% a detector that learned reaches; train longer or at another learning rate "
            f"(its run is in {run_dir})"
        )
    return ap


def load_run(run_dir: Path, device: str = "cpu") -> tuple[torch.nn.Module, dict]:
    """The trained model of ``run_dir`` (eval mode) and its label map {category id: label}."""
    ckpt_path = run_dir / CHECKPOINT
    if not ckpt_path.exists():
        raise InputError(run_dir, "holds no Mask R-CNN checkpoint (train one with `amodalize maskrcnn train`)")
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    labels = {int(k): v for k, v in ckpt["labels"].items()}
    model = build_model(ckpt["config"]["arch"], len(labels) + 1, ckpt["image_size"])
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), labels


def predict(
    model: torch.nn.Module, labels: dict[int, int], dataset: Dataset, images_dir: Path, device: str = "cpu"
) -> list[dict]:
    """COCO detection results (RLE masks thresholded at 0.5) for every image of ``dataset``."""
    to_category = {v: k for k, v in labels.items()}
    data = DetectionSet(dataset, images_dir, labels)
    results = []
    with torch.inference_mode():
        for k, image in enumerate(dataset.images):
            out = model([data[k][0].to(device)])[0]
            for score, label, mask in zip(out["scores"], out["labels"], out["masks"]):
                binary = np.asfortranarray((mask[0] > 0.5).cpu().numpy().astype(np.uint8))
                rle = mask_utils.encode(binary)
                rle["counts"] = rle["counts"].decode("ascii")
                results.append(
                    {
                        "image_id": image.id,
                        "category_id": to_category[int(label)],
                        "segmentation": rle,
                        "bbox": rle_bbox(rle),
                        "score": float(score),
                    }
                )
    return results


def predict_on_boxes(
    model: torch.nn.Module, labels: dict[int, int], dataset: Dataset, images_dir: Path, device: str = "cpu"
) -> dict[int, dict]:
    """The mask head's amodal mask (RLE, P > 0.5) for every non-crowd object of ``dataset`` on its
    ground-truth amodal box and category: mask quality with detection taken out, as papers report it."""
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    out: dict[int, dict] = {}
    with torch.inference_mode():
        for image in dataset.images:
            insts = [i for i in dataset.by_image[image.id] if not i.iscrowd and rle_area(i.amodal) > 0]
            if not insts:
                continue
            pixels = torch.from_numpy(read_rgb(images_dir / image.file_name)).permute(2, 0, 1).float() / 255
            batch, _ = model.transform([pixels.to(device)])
            features = model.backbone(batch.tensors)
            boxes = torch.tensor([_xyxy(rle_bbox(i.amodal)) for i in insts], dtype=torch.float32, device=device)
            (h, w), (bh, bw) = (image.height, image.width), batch.image_sizes[0]
            scaled = boxes * torch.tensor([bw / w, bh / h, bw / w, bh / h], device=device)
            pooled = model.roi_heads.mask_roi_pool(features, [scaled], batch.image_sizes)
            logits = model.roi_heads.mask_predictor(model.roi_heads.mask_head(pooled))
            classes = torch.tensor([labels[i.category_id] for i in insts], device=device)
            prob = logits[torch.arange(len(insts), device=device), classes].sigmoid()[:, None]
            masks = paste_masks_in_image(prob, boxes, (h, w))[:, 0] > 0.5
            for inst, mask in zip(insts, masks.cpu().numpy()):
                rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
                rle["counts"] = rle["counts"].decode("ascii")
                out[inst.id] = rle
    return out


def _xyxy(box: list[float]) -> list[float]:
    x, y, w, h = box
    return [x, y, x + w, y + h]


def bar_chart(rows: list[tuple[str, float, float, float]], title: str) -> np.ndarray:
    """A small BGR bar chart of (label, mean, low, high) rows, values in [0, 1]: a bar to the mean,
    a whisker from low to high (the seeds' range)."""
    width, bar_h, pad = 640, 36, 12
    height = pad * 3 + 24 + len(rows) * (bar_h + pad)
    canvas = np.full((height, width, 3), 255, np.uint8)
    text = functools.partial(cv2.putText, fontFace=cv2.FONT_HERSHEY_SIMPLEX, color=(0, 0, 0), lineType=cv2.LINE_AA)
    text(canvas, title, (pad, pad + 18), fontScale=0.6, thickness=1)
    top = max([high for *_, high in rows] + [1e-9])
    for k, (label, mean, low, high) in enumerate(rows):
        y = pad * 2 + 24 + k * (bar_h + pad)
        x = [200 + int((width - 290) * v / top) for v in (mean, low, high)]
        cv2.rectangle(canvas, (200, y), (x[0], y + bar_h), (180, 120, 40), -1)
        if x[2] > x[1]:
            cv2.line(canvas, (x[1], y + bar_h // 2), (x[2], y + bar_h // 2), (0, 0, 0), 2)
            for end in x[1:]:
                cv2.line(canvas, (end, y + 8), (end, y + bar_h - 8), (0, 0, 0), 2)
        text(canvas, label[:22], (pad, y + 24), fontScale=0.5, thickness=1)
        spread = f" (range {100 * low:.1f}-{100 * high:.1f})" if x[2] > x[1] else ""
        text(canvas, f"{100 * mean:.1f}{spread}", (max(x[0], x[2]) + 6, y + 24), fontScale=0.45, thickness=1)
    return canvas


def evaluate_run(run_dir: Path, gt_path: Path, images_dir: Path, device: str = "cpu") -> dict:
    """Every ``amodal_ap.score`` of a trained run on the images of a ground-truth file, masks on
    the ground-truth boxes included."""
    model, labels = load_run(run_dir, device)
    gt = read_dataset(gt_path)
    if not gt.has_amodal:
        raise InputError(gt.path, "has no amodal masks to evaluate against")
    detections = predict(model, labels, gt, images_dir, device)
    return score(gt, detections, predict_on_boxes(model, labels, gt, images_dir, device))


# compare.json's name for each score of ``amodal_ap.score`` it reports, averaged over seeds.
SCORES = {
    "mask_ap": "AP",
    "ap50": "AP50",
    "ap75": "AP75",
    "box_ap": "box_AP",
    "occluded_ap": "occluded_AP",
    "occluded_box_ap": "occluded_box_AP",
    "occluded_miou": "occluded_miou",
    "occluded_boxed_miou": "occluded_boxed_miou",
}


def over_seeds(per_seed: list[float | None]) -> dict:
    """One score's ``{"mean", "spread", "per_seed"}`` over the seeds that have it, the spread being
    max - min (0 for one seed; mean and spread None where none has it)."""
    values = [v for v in per_seed if v is not None]
    return {
        "mean": float(np.mean(values)) if values else None,
        "spread": float(max(values) - min(values)) if values else None,
        "per_seed": per_seed,
    }


def summarize_seeds(runs: list[dict]) -> dict:
    """Each of SCORES over ``runs`` (one label source, several seeds), as ``over_seeds`` gives it."""
    out: dict = {"seeds": [r["seed"] for r in runs]}
    for name, key in SCORES.items():
        out[name] = over_seeds([r.get(key) for r in runs])
    return out


def paired_differences(rows: dict[str, dict]) -> dict[str, dict]:
    """Each row after the first, as ``summarize_seeds`` rows of its per-seed difference from the
    first (``row - first`` for each seed; None where either lacks the score): with a shared start
    and the same seeds, runs of one seed see the same images in the same order, so their difference
    is what the labels changed, free of the seed's own luck."""
    first = next(iter(rows.values()))
    out = {}
    for name, row in list(rows.items())[1:]:
        paired: dict = {"seeds": row["seeds"]}
        for key in SCORES:
            pairs = zip(row[key]["per_seed"], first[key]["per_seed"])
            paired[key] = over_seeds([None if a is None or b is None else a - b for a, b in pairs])
        out[name] = paired
    return out


# The scores compare.png draws, with its title for each: where label sources differ, then over all objects.
CHARTED = (
    ("occluded_miou", "amodal mean IoU of the occluded objects (bar: mean; whisker: the seeds' range)"),
    ("occluded_ap", "amodal mask AP on the occluded objects"),
    ("mask_ap", "amodal mask AP over all objects"),
)


def compare(
    label_files: list[Path],
    gt_path: Path,
    images_dir: Path,
    gt_images_dir: Path,
    out_dir: Path,
    cfg: MaskRCNNConfig,
    *,
    seeds: int = 1,
    base: Path | None = None,
    base_iters: int = 0,
    base_lr: float | None = None,
    device: str = "cpu",
    on_run: Callable[[str, int], None] | None = None,
    on_step: Callable[[dict], None] | None = None,
) -> dict[str, dict]:
    """Train one model per label file and seed (``cfg.seed``, ``cfg.seed + 1``, ...; the same
    schedule for every file) and score each on ``gt_path``; one row per label file's stem, each
    score as its mean over the seeds, spread (max - min) and per-seed values (``summarize_seeds``).
    With ``base`` (a label file every user has, e.g. the modal one), one model is first trained on
    it for ``base_iters`` at ``base_lr`` (default ``cfg.lr``) and every run starts from it: paired
    runs that differ only in what the labels teach. ``on_run(name, iterations)`` is told of each training.

    Writes ``compare.json`` (with every run, and each later row's seed-by-seed difference from the
    first: ``paired_differences``) and ``compare.png`` into ``out_dir``; a finished run
    is not retrained, an interrupted one resumes.
    """
    names = [p.stem for p in label_files]
    if len(set(names)) != len(names):
        raise InputError(label_files[0], "label files need distinct names (their stems name the runs)")
    rows: dict[str, dict] = {}
    runs: list[dict] = []
    start = base_record = None
    if base is not None:
        start = out_dir / "base"
        if on_run:
            on_run(f"the shared start ({base.stem})", base_iters)
        base_cfg = replace(cfg, iters=base_iters, lr=base_lr or cfg.lr, heads_only=False)
        _train_once(base_cfg, base, images_dir, start, device, on_step, None)
        what = f"the shared start ({base.stem})"
        learned = check_learned(start, gt_path, gt_images_dir, cfg.learned_floor, what, device)
        base_record = {"labels": str(base), "iters": base_iters, "lr": base_cfg.lr, "box_ap_check": learned}
    for path, name in zip(label_files, names):
        scored = []
        for k in range(seeds):
            run = out_dir / name if seeds == 1 else out_dir / name / f"seed-{cfg.seed + k}"
            if on_run:
                on_run(name if seeds == 1 else f"{name}, seed {cfg.seed + k}", cfg.iters)
            seeded = replace(cfg, seed=cfg.seed + k)
            _train_once(seeded, path, images_dir, run, device, on_step, start)
            scores = evaluate_run(run, gt_path, gt_images_dir, device)
            if scores["box_AP"] < cfg.learned_floor:  # nothing is written for detectors that detect nothing
                raise TrainingError(
                    f"the detector on {name} (seed {seeded.seed}) did not learn to detect: box AP "
                    f"{100 * scores['box_AP']:.1f}% on {gt_path.name}, under the {100 * cfg.learned_floor:g}% a "
                    f"detector that learned reaches; no comparison written (runs in {out_dir})"
                )
            scored.append({"labels": name, "seed": seeded.seed, **scores})
        runs += scored
        rows[name] = {"file": str(path), **summarize_seeds(scored)}
    doc = {
        "config": asdict(cfg),
        "gt": str(gt_path),
        "seeds": seeds,
        "base": base_record,
        "rows": rows,
        "paired": {"against": names[0], "rows": paired_differences(rows)},
        "runs": runs,
    }
    write_json_atomic(out_dir / "compare.json", doc)
    panels = [
        bar_chart([(n, r[key]["mean"], min(r[key]["per_seed"]), max(r[key]["per_seed"])) for n, r in rows.items()], t)
        for key, t in CHARTED
        if all(r[key]["mean"] is not None for r in rows.values())
    ]
    write_image_atomic(out_dir / "compare.png", np.concatenate(panels, axis=0))
    return rows


def _train_once(
    cfg: MaskRCNNConfig,
    labels: Path,
    images_dir: Path,
    run: Path,
    device: str,
    on_step: Callable[[dict], None] | None,
    init: Path | None,
) -> None:
    """Train ``run`` unless it is finished; an interrupted one resumes."""
    ckpt = run / CHECKPOINT
    if ckpt.exists() and torch.load(ckpt, map_location="cpu", weights_only=True)["step"] >= cfg.iters:
        return
    train(cfg, labels, images_dir, run, resume=ckpt.exists(), device=device, init=init, on_step=on_step)
