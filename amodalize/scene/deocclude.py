"""File-level de-occlusion: read annotations and images, find amodal masks and order (PCNet-M, or
the file's own), paint with PCNet-C, and write one folder per image.

``OUT_DIR/<image id>/`` holds ``background.png``, ``object-<annotation id>.png`` (RGBA, alpha =
amodal mask, placed at the ``box`` given in ``layers.json``) and ``layers.json``. A folder is
written under a temporary name and renamed when complete, so a rerun skips the finished images
made with the same inputs and settings and redoes the rest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from amodalize.check.evaluate import gt_order_from_masks
from amodalize.data.formats import read_dataset
from amodalize.data.formats.common import load_json
from amodalize.data.images import check_images, read_rgb
from amodalize.data.masks import EMPTY, decode_crop, encode_crop
from amodalize.data.records import Dataset, ImageRecord
from amodalize.data.writer import write_json_atomic
from amodalize.errors import InputError
from amodalize.infer.batcher import Painter, default_batch_size, resolve_device
from amodalize.infer.hosts import convert_dataset
from amodalize.infer.settings import ConvertRequest, decide, load_completer
from amodalize.models.pcnet_c import load_pcnet_c
from amodalize.models.registry import file_sha256
from amodalize.scene.layers import (
    CYCLE_RULE,
    Scene,
    SceneObject,
    SceneOptions,
    background_hole,
    background_query,
    build_layers,
    fill_background,
    object_queries,
    paint_order,
)
from amodalize.version import __version__

LAYERS = "layers.json"


def objects_from_file(dataset: Dataset, image: ImageRecord) -> list[SceneObject]:
    """The non-crowd objects of ``image`` with the file's own amodal masks (which must be there) and
    order (``occluded_by`` where every instance has it, else derived from the masks as the
    evaluation does)."""
    insts = [i for i in dataset.by_image[image.id] if not i.iscrowd]
    if all(i.occluded_by is not None for i in insts):
        occluded_by = {i.id: list(i.occluded_by) for i in insts}
    else:
        occluded_by = {i.id: [] for i in insts}
        for (a, b), sign in gt_order_from_masks(insts).items():
            if sign:
                front, back = (a, b) if sign > 0 else (b, a)
                occluded_by[insts[back].id].append(insts[front].id)
    return [SceneObject(i, decode_crop(i.modal), decode_crop(i.amodal), occluded_by[i.id]) for i in insts]


def objects_from_results(dataset: Dataset, image: ImageRecord, result: object) -> list[SceneObject]:
    """The non-crowd objects of ``image`` with visible parts (where input masks overlapped, each
    object's part of their partition), amodal masks and order from a conversion result."""
    insts = [i for i in dataset.by_image[image.id] if not i.iscrowd]
    occluded_by: dict[int, list[int]] = {i.id: [] for i in insts}
    for front, back, *_ in result.edges:
        occluded_by[back].append(front)
    return [
        SceneObject(
            i,
            decode_crop(result.visible.get(i.id, i.modal)),
            decode_crop(result.amodal.get(i.id, i.modal)),
            occluded_by[i.id],
        )
        for i in insts
    ]


def layers_doc(scene: Scene, image_path: Path, provenance: dict) -> dict:
    """The ``layers.json`` of a painted scene."""
    h, w = scene.background.shape[:2]
    objects = []
    for obj in scene.objects:
        layer = scene.layers.get(obj.instance.id)
        box = [layer.x0, layer.y0, layer.rgba.shape[1], layer.rgba.shape[0]] if layer else None
        objects.append(
            {
                "id": obj.instance.id,
                "category_id": obj.instance.category_id,
                "file": f"object-{obj.instance.id}.png" if layer else None,
                "box": box,
                "visible_mask": encode_crop(obj.visible, h, w),
                "visible_area": obj.visible.area,
                "amodal_area": obj.amodal.area,
                "painted_pixels": layer.painted if layer else 0,
                "occluded_by": sorted(obj.occluded_by),
            }
        )
    return {
        "image": {"id": scene.image.id, "file_name": scene.image.file_name, "width": w, "height": h},
        "image_path": str(image_path.resolve()),
        "background": "background.png",
        "objects": objects,
        "paint_order": scene.paint_order,
        "cyclic": scene.cyclic,
        "cycle_rule": CYCLE_RULE if scene.cyclic else None,
        **provenance,
    }


def write_scene(out_dir: Path, scene: Scene, image_path: Path, provenance: dict) -> Path:
    """Write one image's folder atomically (temporary folder, then rename); returns the folder."""
    final = out_dir / str(scene.image.id)
    tmp = out_dir / f".{scene.image.id}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    cv2.imwrite(str(tmp / "background.png"), scene.background[..., ::-1])
    for key, layer in scene.layers.items():
        cv2.imwrite(str(tmp / f"object-{key}.png"), cv2.cvtColor(layer.rgba, cv2.COLOR_RGBA2BGRA))
    write_json_atomic(tmp / LAYERS, layers_doc(scene, image_path, provenance))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def is_done(out_dir: Path, image: ImageRecord, fingerprint: str) -> bool:
    """True when the image's folder was finished with the same inputs and settings."""
    path = out_dir / str(image.id) / LAYERS
    return path.exists() and load_json(path).get("fingerprint") == fingerprint


def paint_scenes(
    items: list[tuple[ImageRecord, np.ndarray, list[SceneObject]]],
    painter: Painter,
    size: int,
    opts: SceneOptions,
) -> list[Scene]:
    """Paint the objects (in ``size`` crops, the model's input size) and backgrounds (PCNet-C:
    whole images at ``opts.background_scale`` x ``size``; or OpenCV) of several RGB images; the
    objects of all images share batches, as do the backgrounds."""
    per_image = [object_queries(rgb, objects, size, opts) for _, rgb, objects in items]
    stacked = [np.concatenate([p[k] for p in per_image]) for k in range(1, 5)]
    painted = painter(*stacked) if len(stacked[0]) else stacked[0]
    if opts.background == "opencv":
        holes = [background_hole(rgb, objects, opts).astype(np.uint8) for _, rgb, objects in items]
        filled = [cv2.inpaint(rgb, hole, 5, cv2.INPAINT_TELEA) for (_, rgb, _), hole in zip(items, holes)]
    else:
        multiple = painter.generator.size_multiple
        background_size = max(multiple, round(size * opts.background_scale / multiple) * multiple)
        backs = [background_query(rgb, objects, background_size, opts) for _, rgb, objects in items]
        b_rgb, b_hole, b_visible = (np.stack([b[k] for b in backs]) for k in range(3))
        painted_backs = painter(b_rgb, b_hole, b_visible, np.ones(len(items), np.float32))
        filled = [fill_background(rgb, b[3], p) for (_, rgb, _), b, p in zip(items, backs, painted_backs)]
    scenes, start = [], 0
    for (image, rgb, objects), (queries, *_), background in zip(items, per_image, filled):
        order, cyclic = paint_order([o.instance.id for o in objects], {o.instance.id: o.occluded_by for o in objects})
        scene = Scene(image, objects, background, paint_order=order, cyclic=cyclic)
        build_layers(rgb, scene, queries, painted[start : start + len(queries)])
        start += len(queries)
        scenes.append(scene)
    return scenes


# PCNet-M's masks for de-occlusion: the shipped model, ordered by dual completion.
MASKS = ConvertRequest("pcnet", "pcnet")


def deocclude_file(
    ann_json: Path,
    images_dir: Path,
    out_dir: Path,
    checkpoint_c: Path,
    *,
    masks: ConvertRequest = MASKS,
    fmt: str | None = None,
    image_ids: list[int] | None = None,
    shard: tuple[int, int] | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    chunk_size: int = 8,
    on_start: Callable[[int, int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    **settings: object,
) -> dict:
    """De-occlude the images of ``ann_json`` (or those of ``image_ids``; with ``shard=(K, N)`` only
    every N-th of them from the K-th) into ``out_dir``; ``settings`` are SceneOptions fields,
    ``masks`` how PCNet-M completes and orders the objects where the file's own amodal masks are
    not used (they are unless it names a checkpoint, or the file has none). Returns a summary."""
    start = time.perf_counter()
    opts = SceneOptions(**settings)
    dataset = read_dataset(ann_json, fmt)
    images = [im for im in dataset.images if image_ids is None or im.id in image_ids]
    if image_ids is not None and len(images) != len(set(image_ids)):
        missing = sorted(set(image_ids) - {im.id for im in images})
        raise InputError(ann_json, f"has no image with id {missing[0]}")
    if shard is not None:
        images = images[shard[0] :: shard[1]]
    check_images(images, images_dir)
    generator, size, categories = load_pcnet_c(checkpoint_c)
    dev = resolve_device(device)
    batch = batch_size or default_batch_size(dev, size)
    painter = Painter(generator, device=dev, batch_size=batch, categories=categories)
    # the file's own amodal masks unless a PCNet-M is named or the file has none (then the shipped one)
    use_model = masks.checkpoint is not None or not dataset.has_amodal
    completer, m_info = load_completer(masks.checkpoint, device) if use_model else (None, None)
    m_opts, decided = decide(masks, dataset, completer, m_info)
    provenance = {
        "version": __version__,
        "input": str(ann_json),
        "input_sha256": file_sha256(ann_json),
        "masks": "pcnet-m" if completer else "input file",
        "checkpoint_m": m_info,
        "checkpoint_c": {"path": str(checkpoint_c), "sha256": file_sha256(checkpoint_c), "input_size": size},
        "settings": dataclasses.asdict(opts),
        "convert_settings": dataclasses.asdict(m_opts) if completer else None,
        "convert_decided": decided if completer else None,
    }
    fingerprint = hashlib.sha256(json.dumps(provenance, sort_keys=True).encode()).hexdigest()
    provenance["fingerprint"] = fingerprint
    todo = [im for im in images if not is_done(out_dir, im, fingerprint)]
    if on_start:
        on_start(len(images), len(images) - len(todo))
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {"images": len(images), "skipped": len(images) - len(todo), "objects": 0, "painted": 0, "cyclic": 0}
    for k in range(0, len(todo), chunk_size):
        block = todo[k : k + chunk_size]
        results = convert_dataset(dataset, m_opts, block, completer=completer) if completer else None
        items = []
        for image in block:
            rgb = read_rgb(images_dir / image.file_name, (image.height, image.width))
            if results:
                objects = objects_from_results(dataset, image, results[image.id])
            else:
                objects = objects_from_file(dataset, image)
            items.append((image, rgb, [o for o in objects if o.amodal is not EMPTY]))
        for scene, (image, _, _) in zip(paint_scenes(items, painter, size, opts), items):
            write_scene(out_dir, scene, images_dir / image.file_name, provenance)
            summary["objects"] += len(scene.layers)
            summary["painted"] += sum(1 for layer in scene.layers.values() if layer.painted)
            summary["cyclic"] += scene.cyclic
        if on_progress:
            on_progress(len(block))
    summary["seconds"] = time.perf_counter() - start
    summary["forwards"] = painter.forwards
    return summary
