"""Training throughput of PCNet-M: data pipeline alone, forward+backward alone, full step.

Prints one JSON object. The data pipeline must deliver at least 3x what the model consumes.

    python scripts/bench_train.py [--config cpu-small] [--steps 20] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from amodalize.config import load_config
from amodalize.data.bank import build_bank
from amodalize.data.formats import read_dataset
from amodalize.data.synth import SynthOptions, make_dataset
from amodalize.models.pcnet_m import pack_input
from amodalize.train.engine import RankBatches
from amodalize.train.loop import build_model, build_optimizer, weighted_cross_entropy
from amodalize.train.partial import PartialCompletionSet, split_instances


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="cpu-small", help="A preset name or a YAML file.")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    cfg = load_config(args.config, args.overrides)
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    device = torch.device(args.device)
    batch = cfg.optim.batch_size

    with tempfile.TemporaryDirectory() as tmp:
        modal, _ = make_dataset(Path(tmp), args.images, 0, SynthOptions())
        t0 = time.perf_counter()
        bank = build_bank([read_dataset(modal)])
        preprocess_s = time.perf_counter() - t0
    train_ids, _ = split_instances(bank, cfg.data, cfg.run.seed)
    data = PartialCompletionSet(bank, train_ids, train_ids, cfg.data, cfg.run.seed)
    loader = torch.utils.data.DataLoader(
        data, batch_sampler=RankBatches(0, args.steps + 2, batch, 0, 1), num_workers=cfg.run.workers
    )
    batches = iter(loader)
    next(batches)  # worker start-up is not throughput
    t0 = time.perf_counter()
    kept = [next(batches) for _ in range(args.steps)]
    data_sps = args.steps * batch / (time.perf_counter() - t0)

    model = build_model(cfg).to(device)
    optimizer = build_optimizer(cfg, model)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda" and cfg.run.amp)

    def step(b: dict) -> None:
        x = pack_input(b["modal"], b["eraser"], b["category"]).to(device)
        with autocast:
            logits = model(x)
        loss = weighted_cross_entropy(logits, b["target"].to(device), b["eraser"].to(device), cfg.data.inmask_weight)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    step(kept[0])
    sync()
    t0 = time.perf_counter()
    for b in kept:
        step(b)
    sync()
    model_sps = args.steps * batch / (time.perf_counter() - t0)

    loader = torch.utils.data.DataLoader(
        data, batch_sampler=RankBatches(0, args.steps + 1, batch, 0, 1), num_workers=cfg.run.workers
    )
    batches = iter(loader)
    step(next(batches))
    t0 = time.perf_counter()
    for b in batches:
        step(b)
    sync()
    full_sps = args.steps * batch / (time.perf_counter() - t0)
    print(
        json.dumps(
            {
                "config": args.config,
                "device": str(device),
                "device_name": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                "input_size": cfg.data.input_size,
                "widen": cfg.model.widen,
                "batch_size": batch,
                "workers": cfg.run.workers,
                "threads": torch.get_num_threads(),
                "instances": len(bank),
                "preprocess_s": round(preprocess_s, 3),
                "data_samples_per_s": round(data_sps, 1),
                "model_samples_per_s": round(model_sps, 1),
                "train_step_samples_per_s": round(full_sps, 1),
                "data_over_model": round(data_sps / model_sps, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
