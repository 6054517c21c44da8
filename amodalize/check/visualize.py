"""Pictures of a converted (or ground-truth) file: visible masks filled, amodal outlines dashed in
the same colour, arrows from occluder to occludee."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from amodalize.data.masks import EMPTY, decode_crop
from amodalize.data.records import Dataset, ImageRecord, Instance
from amodalize.errors import InputError

DASH = 6  # contour points per dash and per gap


def colour(k: int) -> tuple[int, int, int]:
    """A distinct BGR colour per instance index (golden-angle hues)."""
    hue = int((k * 137.508) % 180)
    bgr = cv2.cvtColor(np.uint8([[[hue, 200, 255]]]), cv2.COLOR_HSV2BGR)[0, 0]
    return int(bgr[0]), int(bgr[1]), int(bgr[2])


def _dashed_outline(canvas: np.ndarray, mask: np.ndarray, offset: tuple[int, int], colour: tuple) -> None:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    for contour in contours:
        pts = contour.reshape(-1, 2) + np.array(offset)
        for start in range(0, len(pts), 2 * DASH):
            seg = pts[start : start + DASH + 1]
            if len(seg) > 1:
                cv2.polylines(canvas, [seg.astype(np.int32)], False, colour, 1, cv2.LINE_AA)


def draw(image: ImageRecord, instances: list[Instance], background: np.ndarray | None = None) -> np.ndarray:
    """A BGR picture of one image's instances (blank canvas unless ``background`` is given)."""
    return render(image, instances, background)[0]


def render(
    image: ImageRecord, instances: list[Instance], background: np.ndarray | None = None
) -> tuple[np.ndarray, dict[int, tuple[int, int]]]:
    """``draw``'s picture and where each drawn instance's arrows start and end (its visible mask's
    centroid in image pixels, by annotation id)."""
    h, w = image.height, image.width
    canvas = np.full((h, w, 3), 255, np.uint8) if background is None else background.copy()
    live = [inst for inst in instances if not inst.iscrowd]
    fill = canvas.copy()
    centres = {}
    for k, inst in enumerate(live):
        crop = decode_crop(inst.modal)
        if crop is EMPTY:
            continue
        x0, y0, x1, y1 = crop.window
        fill[y0:y1, x0:x1][crop.mask] = colour(k)
        ys, xs = np.nonzero(crop.mask)
        centres[inst.id] = (int(xs.mean()) + x0, int(ys.mean()) + y0)
    canvas = cv2.addWeighted(fill, 0.55, canvas, 0.45, 0)
    for k, inst in enumerate(live):
        amodal = decode_crop(inst.amodal) if inst.amodal is not None else EMPTY
        if amodal is not EMPTY:
            _dashed_outline(canvas, amodal.mask, (amodal.x0, amodal.y0), colour(k))
    for inst in live:
        for occluder in inst.occluded_by or ():
            if occluder in centres and inst.id in centres:
                cv2.arrowedLine(canvas, centres[occluder], centres[inst.id], (0, 0, 0), 2, cv2.LINE_AA, tipLength=0.08)
                cv2.arrowedLine(
                    canvas, centres[occluder], centres[inst.id], (255, 255, 255), 1, cv2.LINE_AA, tipLength=0.08
                )
    return canvas, centres


def background_of(image: ImageRecord, images_dir: Path | None) -> np.ndarray | None:
    """The image's BGR pixels from ``images_dir``, or None when there is no such readable file of the
    annotated size (the picture is then drawn on a blank canvas)."""
    if images_dir is None or not image.file_name or not (images_dir / image.file_name).is_file():
        return None  # (OpenCV would print a warning of its own for a missing file)
    pixels = cv2.imread(str(images_dir / image.file_name), cv2.IMREAD_COLOR)
    if pixels is None or pixels.shape[:2] != (image.height, image.width):
        return None
    return pixels


def write_pictures(
    dataset: Dataset, out_dir: Path, image_ids: list[int] | None = None, images_dir: Path | None = None
) -> tuple[list[Path], list[str]]:
    """Write ``<image id>.png`` per chosen image into ``out_dir``; returns the paths written and the
    file names of the images not found in ``images_dir`` (drawn on a blank canvas). Raises
    InputError naming the ids in ``image_ids`` that the file does not hold, or when ``images_dir``
    holds none of the chosen images (nothing is written then)."""
    chosen = [im for im in dataset.images if image_ids is None or im.id in image_ids]
    missing = sorted(set(image_ids or ()) - {im.id for im in chosen})
    if missing:
        raise InputError(dataset.path, f"has no image with id {', '.join(map(str, missing))}")
    # one image found is enough to go on (stops at the first): images are read one at a time below
    if images_dir is not None and chosen and all(background_of(image, images_dir) is None for image in chosen):
        first = str(chosen[0].file_name)
        raise InputError(images_dir, f"holds none of the {len(chosen)} images asked for (e.g. {first!r})")
    out_dir.mkdir(parents=True, exist_ok=True)
    written, blank = [], []
    for image in chosen:
        background = background_of(image, images_dir)
        if background is None and images_dir is not None:
            blank.append(str(image.file_name))
        path = out_dir / f"{image.id}.png"
        cv2.imwrite(str(path), draw(image, dataset.by_image[image.id], background))
        written.append(path)
    return written, blank
