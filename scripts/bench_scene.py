"""Scene de-occlusion on held-out synth scenes, where the true hidden content is known.

Renders ``--images`` scenes, takes them apart with the ground-truth amodal masks and order (so that
only the painting is measured) and compares with the true textures: mean absolute error (0-255)
of the objects' hidden parts (PCNet-C vs the mean colour of the object's visible pixels vs
``cv2.inpaint``) and of the background under all objects (PCNet-C at each ``--background-scale``
vs ``--background opencv`` vs the mean colour of the visible background), plus the no-edit
recomposition error (with the OpenCV background) and speed.
Prints one JSON object.

    python scripts/bench_scene.py --checkpoint-c runs/c/checkpoint.pt [--images 50]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from amodalize.data.formats import read_dataset
from amodalize.data.images import read_rgb
from amodalize.data.masks import place
from amodalize.data.synth import SynthOptions, make_dataset, make_scene, render_layers, to_uint8
from amodalize.infer.batcher import Painter
from amodalize.models.pcnet_c import load_pcnet_c
from amodalize.scene.deocclude import objects_from_file, paint_scenes
from amodalize.scene.layers import SceneOptions
from amodalize.scene.recompose import compose


def truth(seed: int, index: int, opts: SynthOptions) -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray]]:
    """Amodal masks, background and object textures (RGB float) of synth scene ``index``."""
    rng = np.random.default_rng([seed, index])
    amodals, _, _ = make_scene(rng, opts)
    background, textures = render_layers(rng, amodals, (opts.height, opts.width))
    return amodals, background[..., ::-1], [t[..., ::-1] for t in textures]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint-c", type=Path, required=True)
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--seed", type=int, default=999)
    parser.add_argument("--background-scale", type=float, nargs="+", default=[1.0, 1.5, 2.0, 4.0])
    parser.add_argument("--hole-dilate", type=int, default=SceneOptions.hole_dilate)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    generator, size, categories = load_pcnet_c(args.checkpoint_c)
    painter = Painter(generator, device=torch.device(args.device), batch_size=16, categories=categories)
    synth = SynthOptions(render=True)

    with tempfile.TemporaryDirectory() as tmp:
        _, gt_path = make_dataset(Path(tmp), args.images, args.seed, synth)
        gt = read_dataset(gt_path)
        items = []
        for image in gt.images:
            rgb = read_rgb(Path(tmp) / "images" / image.file_name)
            items.append((image, rgb, objects_from_file(gt, image)))

    errors: dict[str, list[float]] = {}

    def add(name: str, filled: np.ndarray, true: np.ndarray, region: np.ndarray) -> None:
        diff = np.abs(filled.astype(np.float32) - to_uint8(true).astype(np.float32))[region]
        errors.setdefault(name, []).append(diff)

    timing = {}
    runs = [("pcnet-c", scale) for scale in args.background_scale] + [("opencv", 1.0)]
    for painter_name, scale in runs:
        name = f"pcnet_c_scale_{scale}" if painter_name == "pcnet-c" else "opencv"
        opts = SceneOptions(hole_dilate=args.hole_dilate, background=painter_name, background_scale=scale)
        start = time.perf_counter()
        scenes = paint_scenes(items, painter, size, opts)
        timing[f"images_per_s_background_{name}"] = len(items) / (time.perf_counter() - start)
        for k, (scene, (_, rgb, objects)) in enumerate(zip(scenes, items)):
            amodals, background, textures = truth(args.seed, k, synth)
            union = np.any(amodals, axis=0) if amodals else np.zeros(rgb.shape[:2], bool)
            add(f"background_{name}", scene.background, background, union)
            if painter_name != "opencv":
                continue
            h, w = rgb.shape[:2]
            add("background_mean_fill", np.broadcast_to(rgb[~union].mean(axis=0), rgb.shape), background, union)
            for obj, amodal, texture in zip(objects, amodals, textures):
                hidden = amodal & ~obj.visible.within((0, 0, w, h))
                if not hidden.any():
                    continue
                layer = scene.layers[obj.instance.id]
                painted = place(layer.rgba[..., :3], layer.window, (0, 0, w, h))
                add("object_pcnet_c", painted, texture, hidden)
                visible = obj.visible.within((0, 0, w, h))
                add("object_mean_fill", np.broadcast_to(rgb[visible].mean(axis=0), rgb.shape), texture, hidden)
                add("object_inpaint", cv2.inpaint(rgb, hidden.astype(np.uint8), 3, cv2.INPAINT_TELEA), texture, hidden)
            same = compose(scene.background, scene.layers, scene.paint_order, {})
            errors.setdefault("recompose_no_edit", []).append(np.abs(same.astype(np.float32) - rgb).ravel())
    result = {name: float(np.concatenate(parts).mean()) for name, parts in errors.items()}
    print(json.dumps({"images": args.images, "input_size": size, **result, **timing, "device": args.device}))


if __name__ == "__main__":
    main()
