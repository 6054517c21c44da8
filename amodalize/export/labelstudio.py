"""Label Studio tasks with predictions: each object's amodal and visible outlines as polygon
regions, each order edge as a relation, the confidences as scores, and the labeling config.

No library writes Label Studio predictions with relations (label-studio-converter imports plain
COCO polygons into tasks, without them), so this module writes the task JSON Label Studio
documents for pre-annotations: points in percent of the image size, regions linked by ``id``.
"""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import quoteattr

from amodalize.data.writer import write_json_atomic, write_text_atomic
from amodalize.export.common import DEFAULTS, ExportImage, ExportObject, ExportOptions, category_names, read_converted
from amodalize.version import __version__

TASKS, CONFIG = "tasks.json", "labeling_config.xml"
# The labeling config's tag names, and the relation label of an order edge.
IMAGE, AMODAL, VISIBLE, OCCLUDES = "image", "amodal", "visible", "occludes"


def labeling_config(names: list[str]) -> str:
    """The Label Studio labeling config: amodal and visible polygon labels per category, and the
    'occludes' relation."""
    labels = "".join(f"<Label value={quoteattr(n)}/>" for n in names)
    return (
        f'<View>\n  <Image name="{IMAGE}" value="$image" zoom="true"/>\n'
        f'  <PolygonLabels name="{AMODAL}" toName="{IMAGE}" strokeWidth="2" opacity="0.2">{labels}</PolygonLabels>\n'
        f'  <PolygonLabels name="{VISIBLE}" toName="{IMAGE}" strokeWidth="1" opacity="0.5">{labels}</PolygonLabels>\n'
        f'  <Relations><Relation value="{OCCLUDES}"/></Relations>\n</View>\n'
    )


def _regions(obj: ExportObject, layer: str, name: str, width: int, height: int) -> list[dict]:
    """One polygon region per outer part of ``obj``'s ``layer`` outline; the first part's id is the
    object's region id for relations."""
    polygons = obj.amodal if layer == AMODAL else obj.visible
    out = []
    for k, polygon in enumerate(polygons):
        points = [[round(100 * x / width, 4), round(100 * y / height, 4)] for x, y in zip(polygon[::2], polygon[1::2])]
        region = {
            "id": region_id(obj.annotation["id"], layer, k),
            "type": "polygonlabels",
            "from_name": layer,
            "to_name": IMAGE,
            "original_width": width,
            "original_height": height,
            "image_rotation": 0,
            "value": {"points": points, "polygonlabels": [name]},
        }
        if layer == AMODAL and obj.confidence is not None:
            region["score"] = obj.confidence
        out.append(region)
    return out


def region_id(annotation_id: int, layer: str, part: int = 0) -> str:
    """The region id of an object's outline part: 'a7', 'v7', 'a7-2' ..."""
    return f"{layer[0]}{annotation_id}" + (f"-{part + 1}" if part else "")


def task(image: ExportImage, names: dict[int, str], image_root: str) -> dict:
    """One Label Studio task: the image and one prediction holding its regions and relations."""
    width, height = image.image["width"], image.image["height"]
    result = []
    for obj in image.objects:
        name = names[obj.annotation.get("category_id", 1)]
        result += _regions(obj, AMODAL, name, width, height) + _regions(obj, VISIBLE, name, width, height)
    outlined = {obj.annotation["id"] for obj in image.objects if obj.amodal}
    for edge in image.edges:
        if edge["occluder_id"] in outlined and edge["occludee_id"] in outlined:
            result.append(
                {
                    "type": "relation",
                    "from_id": region_id(edge["occluder_id"], AMODAL),
                    "to_id": region_id(edge["occludee_id"], AMODAL),
                    "direction": "right",
                    "labels": [OCCLUDES],
                }
            )
    scores = [obj.confidence for obj in image.objects if obj.confidence is not None]
    prediction = {"model_version": f"amodalize {__version__}", "result": result}
    if scores:
        prediction["score"] = round(min(scores), 4)  # the task's least sure completion sorts it
    file_name = image.image.get("file_name") or f"{image.image['id']}.jpg"
    return {"data": {"image": image_root + file_name, "coco_image_id": image.image["id"]}, "predictions": [prediction]}


def export(converted: Path, out_dir: Path, options: ExportOptions = DEFAULTS) -> dict:
    """Write ``out_dir/tasks.json`` (one task per image) and ``out_dir/labeling_config.xml``;
    ``options.image_root`` is put before each ``file_name`` to make the task's image URL. Returns
    counts."""
    images, categories = read_converted(converted)
    names = category_names(categories, images)
    tasks = [task(image, names, options.image_root) for image in images]
    write_text_atomic(out_dir / CONFIG, labeling_config(sorted(set(names.values()))))
    write_json_atomic(out_dir / TASKS, tasks)
    results = [r for t in tasks for r in t["predictions"][0]["result"]]
    return {
        "tasks": len(tasks),
        "regions": sum(r["type"] == "polygonlabels" for r in results),
        "relations": sum(r["type"] == "relation" for r in results),
        "files": [str(out_dir / TASKS), str(out_dir / CONFIG)],
    }


def summary(done: dict) -> str:
    """One line on what ``export`` wrote."""
    return f"{done['tasks']} tasks, {done['regions']} polygon regions, {done['relations']} relations"
