"""PCNet-C on held-out data: hole L1 against the mean-colour fill and OpenCV inpainting, the
speed of the sample pipeline and of batched painting.

Samples follow the training recipe (hole = target ∩ random eraser) with every instance of DATA
as a target, so DATA should be scenes the model never saw. Prints one JSON object.

    python scripts/bench_content.py --checkpoint runs/c/checkpoint.pt --data test/modal.json --images-dir test/images
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from amodalize.config import ContentConfig, from_dict
from amodalize.data.bank import build_bank
from amodalize.data.formats import read_dataset
from amodalize.data.images import ImageCache
from amodalize.infer.batcher import Painter
from amodalize.models.pcnet_c import load_pcnet_c
from amodalize.train.content import validate_content
from amodalize.train.partial import PartialCompletionSet, split_instances, validation_samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--images-dir", type=Path, required=True)
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    generator, size, categories = load_pcnet_c(args.checkpoint)
    saved = torch.load(args.checkpoint, map_location="cpu", weights_only=True)["config"]
    cfg = from_dict(saved, str(args.checkpoint), ContentConfig)
    bank = build_bank([read_dataset(args.data)])
    train, val = split_instances(bank, cfg.data, args.seed)
    targets = np.sort(np.concatenate([train, val]))  # every eligible instance: the whole file is held out
    batch = validation_samples(bank, targets, targets, cfg.data, args.seed, args.samples, ImageCache(args.images_dir))
    quality = validate_content(generator, batch, device, categories=categories)

    rgb = np.ascontiguousarray(batch["rgb"].permute(0, 2, 3, 1).numpy())
    hole, modal, category = batch["hole"].numpy(), batch["modal"].numpy(), batch["category"].numpy()
    speed = {}
    for batch_size in (1, 16, 64):
        painter = Painter(generator, device=device, batch_size=batch_size, categories=categories)
        painter(rgb[:batch_size], hole[:batch_size], modal[:batch_size], category[:batch_size])  # warm-up
        t0 = time.perf_counter()
        painter(rgb, hole, modal, category)
        speed[f"paint_samples_per_s_batch_{batch_size}"] = args.samples / (time.perf_counter() - t0)
    # the training sample pipeline in one process, image decoding included (a fresh cache)
    sample_set = PartialCompletionSet(bank, targets, targets, cfg.data, args.seed, images=ImageCache(args.images_dir))
    t0 = time.perf_counter()
    for g in range(args.samples):
        sample_set[g]
    pipeline_sps = args.samples / (time.perf_counter() - t0)
    print(
        json.dumps(
            {
                "checkpoint": str(args.checkpoint),
                "data": str(args.data),
                "input_size": size,
                "samples": args.samples,
                "targets": int(len(targets)),
                **quality,
                "pipeline_samples_per_s": pipeline_sps,
                **speed,
                "device": str(device),
                "threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
