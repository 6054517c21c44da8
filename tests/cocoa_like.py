"""COCOA-layout files made from synth scenes, so every COCOA code path is tested without the real
demo files: per-image files with regions (amodal polygon, visible/invisible RLE on occluded regions,
order, occlude_rate, area, isStuff, name) and an image beside each, as in the reference demo."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from amodalize.data.masks import Crop, encode_crop, mask_to_polygons
from amodalize.data.synth import SynthOptions, make_scene, render


def raster(polygon: list[float], height: int, width: int) -> np.ndarray:
    """A flat polygon rasterised as pycocotools does."""
    return mask_utils.decode(mask_utils.frPyObjects([polygon], height, width))[:, :, 0].astype(bool)


def write_cocoa_like(folder: Path, images: int = 4, seed: int = 11, size: int = 128) -> Path:
    """``images`` per-image COCOA files ``1.json..`` with ``1.png..`` beside them, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    opts = SynthOptions(width=size, height=size, min_objects=4, max_objects=7)
    for k in range(1, images + 1):
        rng = np.random.default_rng([seed, k])
        amodals, _, _ = make_scene(rng, opts)
        cv2.imwrite(str(folder / f"{k}.png"), render(rng, amodals, (size, size)))
        # COCOA stores one amodal polygon per region; visible = its raster minus those in front
        polygons = [max(mask_to_polygons(m), key=len) for m in amodals]
        rasters = [raster(p, size, size) for p in polygons]
        regions = []
        for depth, index in enumerate(reversed(range(len(amodals))), start=1):  # front first
            amodal = rasters[index]
            front = np.zeros_like(amodal)
            for j in range(index + 1, len(amodals)):
                front |= rasters[j]
            visible = amodal & ~front
            rate = 1 - visible.sum() / max(amodal.sum(), 1)
            region = {
                "segmentation": polygons[index],
                "name": f"object{index}",
                "area": str(int(amodal.sum())),
                "isStuff": "0",
                "occlude_rate": str(round(float(rate), 4)),
                "order": str(depth),
            }
            if rate > 0:
                region["visible_mask"] = encode_crop(Crop(visible), size, size)
                region["invisible_mask"] = encode_crop(Crop(amodal & front), size, size)
            regions.append(region)
        doc = {"author": "synth", "url": f"synth://{k}", "regions": regions, "image_id": 100 + k, "id": k}
        doc["size"] = len(regions)
        (folder / f"{k}.json").write_text(json.dumps(doc))
    return folder
