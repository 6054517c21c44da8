"""Scene recomposition: repaint an image from its de-occluded layers after edits (delete, shift,
swap, bring to front), and the modal-only baseline that has no hidden content to reveal.

Edits apply in this order: deletions, swaps of paint positions, moves to the front, then shifts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from amodalize.data.formats.common import load_json
from amodalize.data.images import read_rgb
from amodalize.data.masks import decode_crop, place
from amodalize.errors import InputError
from amodalize.scene.deocclude import LAYERS
from amodalize.scene.layers import Layer


@dataclass
class Edits:
    """What to change: object ids to delete, (a, b) pairs whose paint positions swap, ids to bring
    to the front, and id -> (dx, dy) pixel shifts."""

    delete: list[int] = field(default_factory=list)
    swap: list[tuple[int, int]] = field(default_factory=list)
    to_front: list[int] = field(default_factory=list)
    shift: dict[int, tuple[int, int]] = field(default_factory=dict)

    def ids(self) -> set[int]:
        """Every object id the edits name."""
        return {*self.delete, *(i for pair in self.swap for i in pair), *self.to_front, *self.shift}


@dataclass
class LayeredScene:
    """A de-occluded image read back: ``layers.json`` as a dict, RGB ``background``, layers by id."""

    folder: Path
    doc: dict
    background: np.ndarray
    layers: dict[int, Layer]


def find_scene(folder: Path, image_id: int | None = None) -> Path:
    """The folder holding ``layers.json``: ``folder`` itself, its ``image_id`` subfolder, or its only one."""
    if image_id is not None:
        chosen = folder / str(image_id)
        if not (chosen / LAYERS).is_file():
            raise InputError(folder, f"has no de-occluded image {image_id} (no {image_id}/{LAYERS})")
        return chosen
    if (folder / LAYERS).is_file():
        return folder
    scenes = sorted(p.parent for p in folder.glob(f"*/{LAYERS}"))
    if len(scenes) == 1:
        return scenes[0]
    if not scenes:
        raise InputError(folder, f"holds no {LAYERS} (write one with `amodalize deocclude`)")
    raise InputError(folder, f"holds {len(scenes)} de-occluded images; choose one with --image")


def load_scene(folder: Path) -> LayeredScene:
    """Read a folder written by ``amodalize deocclude``."""
    doc = load_json(folder / LAYERS)
    if not isinstance(doc, dict) or "paint_order" not in doc or "objects" not in doc:
        raise InputError(folder / LAYERS, "is not a layers.json written by `amodalize deocclude`")
    layers = {}
    for obj in doc["objects"]:
        if obj["file"] is None:
            continue
        path = folder / obj["file"]
        rgba = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if rgba is None or rgba.ndim != 3 or rgba.shape[2] != 4:
            raise InputError(path, "is missing or not an RGBA PNG")
        layers[obj["id"]] = Layer(cv2.cvtColor(rgba, cv2.COLOR_BGRA2RGBA), obj["box"][0], obj["box"][1])
    return LayeredScene(folder, doc, read_rgb(folder / doc["background"]), layers)


def edited_order(order: list[int], edits: Edits) -> list[int]:
    """The paint order (back to front) after deletions, swaps and moves to the front."""
    order = [i for i in order if i not in set(edits.delete)]
    for a, b in edits.swap:
        ia, ib = order.index(a), order.index(b)
        order[ia], order[ib] = b, a
    for i in edits.to_front:
        order.remove(i)
        order.append(i)
    return order


def compose(background: np.ndarray, layers: dict[int, Layer], order: list[int], shift: dict) -> np.ndarray:
    """Paint ``layers`` over ``background`` in ``order`` (back to front), each moved by ``shift[id]``."""
    canvas = background.copy()
    h, w = canvas.shape[:2]
    for i in order:
        layer = layers.get(i)
        if layer is None:
            continue
        dx, dy = shift.get(i, (0, 0))
        x0, y0, x1, y1 = layer.window
        window = (x0 + dx, y0 + dy, x1 + dx, y1 + dy)
        rgba = place(layer.rgba, window, (0, 0, w, h))
        opaque = rgba[..., 3] > 127
        canvas[opaque] = rgba[..., :3][opaque]
    return canvas


def modal_baseline(image: np.ndarray, doc: dict, edits: Edits) -> np.ndarray:
    """The same deletions and shifts with visible masks only: the vacated pixels inpainted by
    OpenCV (Telea, radius 5), shifted objects pasted as their visible pixels. Order edits cannot be
    shown without amodal layers and are ignored."""
    h, w = image.shape[:2]
    visible = {obj["id"]: decode_crop(obj["visible_mask"]) for obj in doc["objects"]}
    moved = [i for i in (*edits.delete, *edits.shift) if i in visible]
    hole = np.zeros((h, w), bool)
    for i in moved:
        hole |= visible[i].within((0, 0, w, h))
    hole = cv2.dilate(hole.astype(np.uint8), np.ones((5, 5), np.uint8))
    out = cv2.inpaint(np.ascontiguousarray(image), hole, 5, cv2.INPAINT_TELEA) if hole.any() else image.copy()
    for i, (dx, dy) in edits.shift.items():
        crop = visible[i]
        x0, y0, x1, y1 = crop.window
        pixels = place(image, (0, 0, w, h), crop.window)
        window = (x0 + dx, y0 + dy, x1 + dx, y1 + dy)
        mask = place(crop.mask, window, (0, 0, w, h))
        out[mask] = place(pixels, window, (0, 0, w, h))[mask]
    return out


def side_by_side(images: list[np.ndarray], titles: list[str]) -> np.ndarray:
    """RGB images in a row with a title bar above each."""
    bar = 24
    tiles = []
    for image, title in zip(images, titles):
        tile = np.full((image.shape[0] + bar, image.shape[1], 3), 255, np.uint8)
        tile[bar:] = image
        cv2.putText(tile, title, (6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        tiles.append(np.pad(tile, ((0, 0), (0, 4), (0, 0)), constant_values=255))
    return np.concatenate(tiles, axis=1)


def recompose(scene: LayeredScene, edits: Edits) -> np.ndarray:
    """The edited scene as an RGB image."""
    known = set(scene.layers)
    unknown = sorted(edits.ids() - known)
    if unknown:
        raise InputError(scene.folder, f"has no object {unknown[0]} (objects: {', '.join(map(str, sorted(known)))})")
    moved = {*(i for pair in edits.swap for i in pair), *edits.to_front, *edits.shift} & set(edits.delete)
    if moved:
        raise InputError(scene.folder, f"object {min(moved)} is deleted, so it cannot also be moved or reordered")
    order = [i for i in scene.doc["paint_order"] if i in known]
    return compose(scene.background, scene.layers, edited_order(order, edits), edits.shift)


def original_image(scene: LayeredScene) -> np.ndarray:
    """The image the scene was made from (its path is recorded in ``layers.json``)."""
    return read_rgb(Path(scene.doc["image_path"]))


def mean_abs_error(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two uint8 images, in 0-255 units over pixels and channels."""
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())
