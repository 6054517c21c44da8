"""Conversion speed with PCNet-M: batched vs one-pair-per-forward, paper size vs the CPU default.

Prints one JSON object: images/s, pair tests/s, achieved GMAC/s against this machine's measured
convolution throughput, and the speed-ups (a) paper model batched vs batch 1 (results must be
identical), (b) the CPU default model batched vs the paper model at batch 1.

    python scripts/bench_convert.py [--checkpoint runs/cpu-small/checkpoint.pt] [--images 8]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from amodalize.convert import ConvertOptions, convert_dataset
from amodalize.data.formats import read_dataset
from amodalize.data.synth import SynthOptions, make_dataset
from amodalize.data.writer import augment, write_json_atomic
from amodalize.evaluate import evaluate
from amodalize.infer.batcher import Completer, default_batch_size
from amodalize.models.pcnet_m import load_pcnet_m
from amodalize.models.unet import UNet


def gmac_per_forward(model: torch.nn.Module, size: int) -> float:
    """Multiply-accumulates of one forward at ``size`` x ``size``, in GMAC (convolutions only)."""
    total = 0

    def hook(module: torch.nn.Conv2d, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        k = module.kernel_size[0] * module.kernel_size[1]
        total += output.numel() * module.in_channels // module.groups * k

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.inference_mode():
        model(torch.zeros(1, 2, size, size))
    for h in handles:
        h.remove()
    return total / 1e9


def conv_peak_gmacs(device: torch.device) -> float:
    """Best measured GMAC/s over 3x3 convolutions of the UNet's layer shapes (the reachable ceiling)."""
    best = 0.0
    for channels, size in ((32, 256), (64, 128), (128, 64), (256, 32)):
        for batch in (1, 4):
            conv = torch.nn.Conv2d(channels, channels, 3, padding=1).to(device).to(memory_format=torch.channels_last)
            x = torch.randn(batch, channels, size, size, device=device).contiguous(memory_format=torch.channels_last)
            macs = batch * channels * channels * 9 * size * size / 1e9
            with torch.inference_mode():
                conv(x)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                for _ in range(5):
                    conv(x)
                if device.type == "cuda":
                    torch.cuda.synchronize()
            best = max(best, 5 * macs / (time.perf_counter() - t0))
    return best


def run(dataset, model, size, batch, device, gt) -> dict:
    completer = Completer(model, size, device=device, batch_size=batch)
    opts = ConvertOptions("pcnet", "pcnet")
    t0 = time.perf_counter()
    results = convert_dataset(dataset, opts, completer=completer, chunk_size=8)
    seconds = time.perf_counter() - t0
    gmac = gmac_per_forward(model.cpu(), size)
    model.to(device)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        write_json_atomic(out, augment(dataset, results, {}))
        quality = evaluate(read_dataset(out), gt)
    return {
        "batch_size": batch,
        "input_size": size,
        "params": sum(p.numel() for p in model.parameters()),
        "seconds": round(seconds, 3),
        "images_per_s": round(len(dataset.images) / seconds, 3),
        "pair_tests_per_s": round(completer.queries / seconds, 2),
        "forwards": completer.forwards,
        "queries": completer.queries,
        "gmac_per_query": round(gmac, 3),
        "achieved_gmac_per_s": round(completer.queries * gmac / seconds, 1),
        "order_acc": quality["order_acc"],
        "pooled_iou": quality["pooled_iou"],
        "_results": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="CPU-default model (else random widen-1 at 64)")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="paper model batch (default: 4 on CPU, 256 on CUDA)"
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    batch = args.batch_size or (256 if device.type == "cuda" else 4)
    with tempfile.TemporaryDirectory() as tmp:
        modal, gt_path = make_dataset(Path(tmp), args.images, args.seed, SynthOptions())
        dataset, gt = read_dataset(modal), read_dataset(gt_path)
    torch.manual_seed(0)
    paper = UNet(2, 2, widen=2).eval()  # the paper's size; random weights: timing and equality only
    if args.checkpoint:
        small, small_size, *_ = load_pcnet_m(args.checkpoint)
    else:
        small, small_size = UNet(2, 2, widen=1).eval(), 64
    one = run(dataset, paper, 256, 1, device, gt)
    many = run(dataset, paper, 256, batch, device, gt)
    cpu_default = run(dataset, small, small_size, default_batch_size(device, small_size), device, gt)
    a, b = one["_results"], many["_results"]
    identical = all(a[k].amodal == b[k].amodal and a[k].edges == b[k].edges for k in a)
    for r in (one, many, cpu_default):
        r.pop("_results")
    print(
        json.dumps(
            {
                "device": str(device),
                "device_name": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                "threads": torch.get_num_threads(),
                "images": len(dataset.images),
                "instances": len(dataset.instances),
                "conv_peak_gmac_per_s": round(conv_peak_gmacs(device), 1),
                "paper_batch1": one,
                "paper_batched": many,
                "cpu_default_batched": cpu_default,
                "batched_identical_to_batch1": identical,
                "speedup_a_batched_vs_batch1": round(one["seconds"] / many["seconds"], 2),
                "speedup_b_cpu_default_vs_paper_batch1": round(one["seconds"] / cpu_default["seconds"], 2),
                "note": "paper-size weights are random: its order_acc/pooled_iou are not a quality figure",
            }
        )
    )


if __name__ == "__main__":
    main()
