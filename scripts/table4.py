"""The paper's Table 4 on rendered scenes: Mask R-CNN trained on raw / Convex^R / PCNet-M / ground-truth
amodal labels of the same images, amodal mask AP on held-out scenes. Prints one JSON document.

The protocol of ``make demo-maskrcnn`` (README, "Do the labels train a better model?"): one model
trained on the raw (modal) labels, then each label source fine-tuned from it with ``--seeds``
seeds (the whole detector, or its heads alone with ``--heads-only`` as the CPU targets do); every
score of ``maskrcnn compare`` (AP over all objects, AP and mean IoU over the occluded ones) as its
mean and spread over the seeds.

    python scripts/table4.py OUT_DIR                      # one GPU: r50-fpn, sized for <= 10 minutes
    python scripts/table4.py OUT_DIR --quick              # tiny, any device (a smoke run)
    python scripts/table4.py OUT_DIR --checkpoint run/checkpoint.pt --iters 3000

Sizing (docs/gpu.md, "Table 4 on a GPU"): the r50-fpn step time that scripts/gpu_check.py measures,
times ``--base-iters`` plus ``--iters`` x 4 label sources x ``--seeds``, is the bulk of the run; the
PCNet-M training (cpu-small preset on the device, unless --checkpoint is given), the conversions and
the evaluations add about a minute. Finished Mask R-CNN runs are kept, so a rerun continues where a killed one stopped.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from amodalize.api import convert_file  # noqa: E402
from amodalize.check.evaluate import evaluate  # noqa: E402
from amodalize.check.maskrcnn import MaskRCNNConfig, compare  # noqa: E402
from amodalize.config import load_config  # noqa: E402
from amodalize.data.formats import read_dataset  # noqa: E402
from amodalize.data.synth import SynthOptions, make_dataset  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--quick", action="store_true", help="Tiny sizes and a few steps, on any device.")
    parser.add_argument("--base-iters", type=int, default=1200, help="Iterations of the shared start (raw labels).")
    parser.add_argument("--iters", type=int, default=400, help="Fine-tuning iterations per label source and seed.")
    parser.add_argument("--seeds", type=int, default=2, help="Fine-tuning runs per label source.")
    parser.add_argument("--base-lr", type=float, default=0.02, help="Learning rate of the shared start.")
    parser.add_argument("--lr", type=float, default=0.005, help="Fine-tuning learning rate (lower: less seed noise).")
    parser.add_argument("--batch-size", type=int, default=8, help="Images per Mask R-CNN iteration.")
    parser.add_argument(
        "--heads-only", action="store_true", help="Fine-tune the box and mask heads alone (the CPU targets' protocol)."
    )
    parser.add_argument("--train-images", type=int, default=600)
    parser.add_argument("--test-images", type=int, default=200)
    parser.add_argument("--size", type=int, default=256, help="Scene side in pixels.")
    parser.add_argument("--checkpoint", type=Path, default=None, help="PCNet-M checkpoint (default: train cpu-small).")
    parser.add_argument("--arch", default="r50-fpn", choices=["r50-fpn", "mnv3-fpn"])
    args = parser.parse_args()
    if args.quick:
        args.iters, args.base_iters, args.batch_size, args.train_images, args.test_images, args.size = 2, 2, 1, 6, 3, 64
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out: Path = args.out
    started = time.perf_counter()
    train_dir, test_dir, labels = out / "train", out / "test", out / "labels"
    opts = SynthOptions(width=args.size, height=args.size, render=True)
    make_dataset(train_dir, args.train_images, 300, opts)
    make_dataset(test_dir, args.test_images, 301, opts)

    ckpt = args.checkpoint
    if ckpt is None:
        from amodalize.train.loop import train

        run = out / "pcnet-run"
        overrides = ["optim.iters=3", "run.val_samples=8"] if args.quick else []
        if not (run / ".done").exists():
            shutil.rmtree(run, ignore_errors=True)
            train(load_config("cpu-small", overrides), [train_dir / "modal.json"], run, device=device)
            (run / ".done").touch()
        ckpt = run / "checkpoint.pt"

    modal = train_dir / "modal.json"
    sources = {
        "raw": {"method": "raw", "order": "convex"},
        "convex-r": {"method": "convex-r", "order": "convex"},
        "pcnet": {"checkpoint": ckpt},
    }
    label_quality = {}
    gt_train = read_dataset(train_dir / "gt.json")
    for name, how in sources.items():
        convert_file(modal, labels / f"{name}.json", device=device, **how)
        metrics = evaluate(read_dataset(labels / f"{name}.json", "coco_amodal"), gt_train)
        label_quality[name] = {k: round(metrics[k], 4) for k in ("order_acc", "pooled_iou", "miou_occluded")}
    shutil.copy(train_dir / "gt.json", labels / "gt-amodal.json")

    cfg = MaskRCNNConfig(
        arch=args.arch,
        image_size=args.size,
        iters=args.iters,
        batch_size=args.batch_size,
        lr=args.lr,
        heads_only=args.heads_only,
        **({"learned_floor": 0.0} if args.quick else {}),  # a smoke run of a few steps cannot learn
    )
    t0 = time.perf_counter()
    rows = compare(
        [labels / f"{n}.json" for n in (*sources, "gt-amodal")],
        test_dir / "gt.json",
        train_dir / "images",
        test_dir / "images",
        out / "compare",
        cfg,
        seeds=args.seeds,
        base=labels / "raw.json",
        base_iters=args.base_iters,
        base_lr=args.base_lr,
        device=device,
    )
    doc = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "config": {
            "arch": args.arch,
            "base_iters": args.base_iters,
            "base_lr": args.base_lr,
            "iters": args.iters,
            "lr": args.lr,
            "seeds": args.seeds,
            "batch_size": args.batch_size,
            "size": args.size,
            "heads_only": args.heads_only,
        },
        "train_images": args.train_images,
        "test_images": args.test_images,
        "label_quality_on_train": label_quality,
        "scores": rows,
        "maskrcnn_seconds": round(time.perf_counter() - t0, 1),
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out / "table4.json").write_text(json.dumps(doc, indent=1))
    print(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
