"""The one training engine that PCNet-M (``loop``), PCNet-C (``content``) and Mask R-CNN
(``check.maskrcnn``) share: joining torchrun's process group, each rank's batches, the step loop
(logging, validation, checkpoints, Ctrl-C), one checkpoint layout, resume and the run's log.

A checkpoint is one dict: ``kind`` (pcnet-m, pcnet-c, maskrcnn), ``step``, ``rng``, ``config``,
each stateful part's ``state_dict()`` under its own name (``model``, ``optimizer``,
``lr_scheduler``; PCNet-C's ``generator``, ``discriminator``, ``opt_g`` ...), and what the kind
records beside (``save_checkpoint``). Checkpoints written before ``kind`` and ``rng`` were in every
one still load (``read_checkpoint``).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import yaml

from amodalize.config import AnyConfig, from_dict, to_dict
from amodalize.errors import InputError, TrainingError
from amodalize.infer.batcher import resolve_device
from amodalize.models.registry import RUN_CHECKPOINT

CHECKPOINT = RUN_CHECKPOINT
_WORKER_INPUT_ERROR = "amodalize.errors.InputError: "


@dataclass(frozen=True)
class Schedule:
    """How a run steps: ``iters`` steps of ``batch_size`` samples (over all processes), a log line
    every ``log_every`` steps, a validation every ``val_every`` steps (0: only at the end) and a
    checkpoint every ``checkpoint_every``."""

    iters: int
    batch_size: int
    log_every: int = 1
    val_every: int = 0
    checkpoint_every: int = 1000

    @classmethod
    def of(cls, cfg: AnyConfig) -> Schedule:
        """The schedule of a PCNet-M or PCNet-C config."""
        o, r = cfg.optim, cfg.run
        return cls(o.iters, o.batch_size, r.log_every, r.val_every, r.checkpoint_every)


def optimise(
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scheduler: object,
    step: int,
    hint: str,
    clip_norm: float | None = None,
) -> None:
    """One optimiser and scheduler step on ``loss`` (gradients clipped to ``clip_norm`` when given);
    a non-finite loss stops training with ``hint``."""
    if not torch.isfinite(loss):
        raise TrainingError(f"loss became {loss.item()} at step {step}; {hint}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip_norm is not None:
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], clip_norm)
    optimizer.step()
    scheduler.step()


def lr_factor(cfg: AnyConfig, step: int) -> float:
    """Learning-rate multiplier at 0-based ``step``."""
    o = cfg.optim
    if o.schedule == "step":
        return o.gamma ** sum(step >= m for m in o.milestones)
    if o.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(step, o.iters) / o.iters))
    return 1.0


class RankBatches:
    """Batches of global sample indices for one rank: step s takes ``[s*B + r*b, s*B + (r+1)*b)``."""

    def __init__(self, start: int, iters: int, batch: int, rank: int, world: int) -> None:
        self.start, self.iters, self.per_rank, self.batch, self.rank = start, iters, batch // world, batch, rank

    def __len__(self) -> int:
        return self.iters - self.start

    def __iter__(self) -> Iterator[list[int]]:
        for s in range(self.start, self.iters):
            first = s * self.batch + self.rank * self.per_rank
            yield list(range(first, first + self.per_rank))


def rank_loader(
    data: torch.utils.data.Dataset, cfg: AnyConfig, start: int, rank: int, world: int, pin: bool
) -> torch.utils.data.DataLoader:
    """This rank's slice of global batches ``start .. cfg.optim.iters`` of ``data``."""
    return torch.utils.data.DataLoader(
        data,
        batch_sampler=RankBatches(start, cfg.optim.iters, cfg.optim.batch_size, rank, world),
        num_workers=cfg.run.workers,
        pin_memory=pin,
        persistent_workers=False,
    )


def batches(loader: torch.utils.data.DataLoader) -> Iterator:
    """The loader's batches; an InputError raised in a worker process (which the DataLoader
    re-raises as a RuntimeError carrying the worker's traceback) comes back as itself, one line."""
    iterator = iter(loader)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except RuntimeError as e:
            if _WORKER_INPUT_ERROR not in str(e):
                raise
            path, _, problem = str(e).rstrip().rsplit(_WORKER_INPUT_ERROR, 1)[1].partition(": ")
            raise InputError(path, problem) from None
        yield batch


def run_steps(
    batches_in: Iterable,
    start: int,
    step_fn: Callable[[object, int], dict],
    schedule: Schedule,
    run_dir: Path,
    writer: bool,
    validate_now: Callable[[], dict] | None,
    checkpoint: Callable[[int], None],
    on_step: Callable[[dict], None] | None = None,
) -> tuple[int, dict]:
    """Drive a training run from step ``start`` over ``batches_in`` (a DataLoader or any iterable of
    batches): ``step_fn(batch, step)`` optimises one batch and returns its log fields; after each
    step the record is logged, validation and checkpoints run as ``schedule`` asks (only ``writer``
    writes files) and ``on_step(record)`` is called. Ctrl-C saves a checkpoint first. Ends with a
    checkpoint and, given ``validate_now``, a logged validation; returns (last step, its metrics,
    or the last step's record without validation)."""
    step, record = start, {}
    tick = time.perf_counter()
    try:
        for batch in batches(batches_in):
            data_s = time.perf_counter() - tick  # waiting for the loader: the data pipeline is too slow
            fields = step_fn(batch, step)
            step += 1
            now = time.perf_counter()
            record = {
                "step": step,
                **fields,
                "samples_per_s": schedule.batch_size / max(now - tick, 1e-9),
                "data_s": data_s,
                "step_s": now - tick,
            }
            tick = now
            if writer and (step % schedule.log_every == 0 or step == schedule.iters):
                log_record(run_dir, record)
            if validate_now and schedule.val_every and step % schedule.val_every == 0 and step < schedule.iters:
                metrics = validate_now()
                if writer:
                    log_record(run_dir, {"step": step, "val": metrics})
            if step % schedule.checkpoint_every == 0:
                checkpoint(step)
            if on_step:
                on_step(record)
    except KeyboardInterrupt:
        checkpoint(step)
        raise
    checkpoint(step)
    if validate_now is None:
        return step, record
    metrics = validate_now()
    if writer:
        log_record(run_dir, {"step": step, "val": metrics})
    return step, metrics


def start_run(run_dir: Path, resume: bool, device: str, batch_size: int, threads: int) -> tuple[torch.device, int, int]:
    """Join torchrun's process group if there is one and check the run directory; returns
    (device, rank, world size)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if batch_size % world:
        raise TrainingError(f"the batch size {batch_size} does not split evenly over {world} processes")
    dev = resolve_device(device, local_rank)
    if "LOCAL_RANK" in os.environ and not dist.is_initialized():  # under torchrun, even with one process
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    if threads:
        torch.set_num_threads(threads)
    check_run_dir(run_dir, resume)
    return dev, rank, world


def distributed(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` in DistributedDataParallel where this process joined torchrun's group, else itself."""
    if not dist.is_initialized():
        return model
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def wait_for_all() -> None:
    """Wait until every process of torchrun's group gets here (so none reads a checkpoint before the
    first has written it); returns at once outside torchrun."""
    if dist.is_initialized():
        dist.barrier()


def check_run_dir(run_dir: Path, resume: bool) -> None:
    """Fail where a new run would overwrite a checkpoint, or a resumed one has none."""
    ckpt_path = run_dir / CHECKPOINT
    if ckpt_path.exists() and not resume:
        raise InputError(run_dir, "already holds a checkpoint; pass --resume to continue it or choose another --out")
    if resume and not ckpt_path.exists():
        raise InputError(run_dir, "has no checkpoint to resume")


def check_resumable(ckpt: dict, cfg: AnyConfig, fingerprint: str, path: Path) -> None:
    """Fail unless checkpoint ``ckpt`` was trained on the same data with the same network and input size."""
    if ckpt.get("data_fingerprint") != fingerprint:
        raise InputError(path, "was trained on different data; resume with the same annotation files")
    old = from_dict(ckpt["config"], str(path), type(cfg))
    for key, value in to_dict(old)["model"].items():
        if getattr(cfg.model, key) != value:
            raise InputError(path, f"was trained with model.{key}={value}, the config says {getattr(cfg.model, key)}")
    if old.data.input_size != cfg.data.input_size:
        raise InputError(
            path, f"was trained at input size {old.data.input_size}, the config says {cfg.data.input_size}"
        )


def save_checkpoint(path: Path, kind: str, step: int, parts: Mapping[str, object], **meta: object) -> None:
    """Write the one checkpoint layout: ``kind``, ``step``, each of ``parts``' state dict under its
    name, the torch RNG state and ``meta`` (``config`` and what the kind records beside)."""
    states = {name: part.state_dict() for name, part in parts.items()}
    atomic_save({"kind": kind, **states, "step": step, "rng": {"torch": torch.get_rng_state()}, **meta}, path)


def read_checkpoint(path: Path, kind: str) -> dict:
    """A run's checkpoint, refused in one line where it is another kind's (one written before every
    checkpoint named its kind is told by its fields: PCNet-C's always did, Mask R-CNN's hold labels)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    found = ckpt.get("kind") or ("maskrcnn" if "labels" in ckpt else "pcnet-m")
    if found != kind:
        names = {"pcnet-m": "PCNet-M", "pcnet-c": "PCNet-C", "maskrcnn": "Mask R-CNN"}
        how = {"pcnet-m": "amodalize train", "pcnet-c": "amodalize train --model pcnet-c"}
        raise InputError(
            path,
            f"is a {names[found]} checkpoint, not a {names[kind]} one; resume it with "
            f"`{how.get(found, 'amodalize maskrcnn train')}`",
        )
    return ckpt


def restore_checkpoint(ckpt: dict, parts: Mapping[str, object]) -> int:
    """Load each of ``parts`` from its state in ``ckpt`` and the RNG state where it was saved;
    returns the step to continue from."""
    for name, part in parts.items():
        part.load_state_dict(ckpt[name])
    if "rng" in ckpt:
        torch.set_rng_state(ckpt["rng"]["torch"])
    return ckpt["step"]


def atomic_save(obj: dict, path: Path) -> None:
    """torch.save to a temporary file, then rename: a checkpoint is never half written."""
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def begin_log(run_dir: Path, cfg: AnyConfig, start: int, device: torch.device) -> None:
    """Create the run directory, record the config beside the results, drop log lines past ``start``
    and log where this (part of the) run executes."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    truncate_log(run_dir / "log.jsonl", start)
    env = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "processes": dist.get_world_size() if dist.is_initialized() else 1,
        "backend": dist.get_backend() if dist.is_initialized() else None,
        "torch": torch.__version__,
    }
    log_record(run_dir, {"step": start, "env": env})


def log_record(run_dir: Path, record: dict) -> None:
    """Append one JSON line to the run's log.jsonl."""
    with open(run_dir / "log.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def truncate_log(path: Path, step: int) -> None:
    """Drop log lines past the checkpoint being resumed (they were not kept)."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in keep))
