"""Label Studio tasks with predictions: each object's amodal and visible outlines as polygon
regions, each order edge as a relation, the confidences as scores, and the labeling config; and
``read_back``, which reads Label Studio's JSON export of those tasks (or the tasks themselves).

No library writes Label Studio predictions with relations (label-studio-converter imports plain
COCO polygons into tasks, without them), so this module writes the task JSON Label Studio
documents for pre-annotations: points in percent of the image size, regions linked by ``id``.
A region's id names its object and outline ('a7', 'v7', 'a7-2' for a second part), and each
task's data carries what the tool cannot show (``amodalize``: the image entry and every
annotation and edge of it as the converted file holds them, crowd regions included; the first
task also the file's other top-level fields), so that nothing is lost on the way back.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from xml.sax.saxutils import quoteattr

from amodalize.data.formats.common import load_json
from amodalize.data.writer import write_json_atomic, write_text_atomic
from amodalize.errors import InputError
from amodalize.export.common import (
    DEFAULTS,
    ExportImage,
    ExportObject,
    ExportOptions,
    category_names,
    converted_images,
)
from amodalize.export.restore import Returned, ReturnedImage, ReturnedObject
from amodalize.version import __version__

TASKS, CONFIG = "tasks.json", "labeling_config.xml"
# The top-level fields of a converted file that tasks carry image by image.
PER_IMAGE = ("images", "annotations", "occlusion_pairs")
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
        points = percent(polygon, width, height)
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


def percent(polygon: list[float], width: int, height: int) -> list[list[float]]:
    """A COCO polygon (pixels) as Label Studio's points: [x, y] in percent of the image size."""
    # 6 decimals: within 1e-5 px on images up to 10,000 px, so that the outline rasterises as it was
    return [[round(100 * x / width, 6), round(100 * y / height, 6)] for x, y in zip(polygon[::2], polygon[1::2])]


def pixels(points: list[list[float]], width: int, height: int) -> list[float]:
    """Label Studio's points (percent of the image size) as a COCO polygon in pixels (to 1e-4 px,
    which gives back the pixels of a polygon ``percent`` wrote without float noise)."""
    return [round(v, 4) for x, y in points for v in (x * width / 100, y * height / 100)]


def region_id(annotation_id: int, layer: str, part: int = 0) -> str:
    """The region id of an object's outline part: 'a7', 'v7', 'a7-2' ..."""
    return f"{layer[0]}{annotation_id}" + (f"-{part + 1}" if part else "")


REGION_ID = re.compile(r"([av])(\d+)(?:-(\d+))?")


def task(
    image: ExportImage,
    names: dict[int, str],
    image_root: str,
    categories: list[dict],
    positions: dict[int, int],
    images_total: int,
) -> dict:
    """One Label Studio task: the image, one prediction holding its regions and relations, and the
    image's entry, annotations, edges and ``categories`` as the converted file holds them, with
    their ``positions`` in the file (by ``id()``) and the file's number of images."""
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
    used = {ann.get("category_id") for ann in image.annotations}
    carried = {
        "image": image.image,
        "annotations": image.annotations,
        "occlusion_pairs": image.edges,
        "categories": [c for c in categories if c.get("id") in used],
        "positions": [positions[id(item)] for item in image.annotations + image.edges],
        "images_total": images_total,
    }
    data = {"image": image_root + file_name, "coco_image_id": image.image["id"], "amodalize": carried}
    return {"data": data, "predictions": [prediction]}


def export(converted: Path, out_dir: Path, options: ExportOptions = DEFAULTS) -> dict:
    """Write ``out_dir/tasks.json`` (one task per image) and ``out_dir/labeling_config.xml``;
    ``options.image_root`` is put before each ``file_name`` to make the task's image URL. Returns
    counts."""
    doc = load_json(converted)
    images, categories = converted_images(doc, converted)
    names = category_names(categories, images)
    positions = {id(item): k for k, item in enumerate(doc["annotations"] + doc.get("occlusion_pairs", []))}
    tasks = [task(image, names, options.image_root, categories, positions, len(images)) for image in images]
    if tasks:  # the file's other top-level fields travel once
        tasks[0]["data"]["amodalize"]["file"] = {k: v for k, v in doc.items() if k not in PER_IMAGE}
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


def read_back(path: Path, like: dict | None = None) -> Returned:
    """The tasks of Label Studio's JSON export (or of ``tasks.json`` as exported) as they came
    back: each task's latest submitted annotation, else its prediction. ``like``: the converted
    file the tasks were made from (else the tasks' own ``amodalize`` data is the base)."""
    tasks = load_json(path)
    if not isinstance(tasks, list) or not all(isinstance(t, dict) and isinstance(t.get("data"), dict) for t in tasks):
        raise InputError(path, "is not a Label Studio JSON export (a list of tasks, each with 'data')")
    base = like if like is not None else _carried_file(tasks, path)
    images, categories = converted_images(base, path)
    by_id = {image.image["id"]: image for image in images}
    ids = {name: c for c, name in category_names(categories, images).items()}
    problems: Counter = Counter()
    returned = []
    for n, item in enumerate(tasks):
        image = by_id.get(item["data"].get("coco_image_id"))
        if image is None:
            raise InputError(path, f"task {n + 1} names image {item['data'].get('coco_image_id')!r}, not in the file")
        result, by_person = _chosen_result(item)
        if result is not None:  # else nobody annotated it and the export holds no prediction: as converted
            returned.append(_image_back(image, result, by_person, ids, problems))
    total = max((item["data"].get("amodalize", {}).get("images_total", 0) for item in tasks), default=0)
    if like is None and total > len(tasks):
        # Label Studio exports the annotated tasks only, unless asked for all of them
        problems["images whose task is not in the export, left out (--like CONVERTED keeps them as converted)"] = (
            total - len(tasks)
        )
    return Returned(base, returned, _as_written, problems)


def _carried_file(tasks: list[dict], path: Path) -> dict:
    """The converted document the tasks carry in their ``amodalize`` data (the first task's file
    fields, where it came back, else only the categories the images use)."""
    doc: dict = {"images": []}
    items: list[tuple[int, str, dict]] = []  # (position in the file, key, item)
    used: dict[object, dict] = {}
    for n, item in enumerate(tasks):
        carried = item["data"].get("amodalize")
        if not isinstance(carried, dict) or "image" not in carried:
            raise InputError(
                path, f"task {n + 1} carries no amodalize data (exported by an older version?): pass --like CONVERTED"
            )
        doc.update(carried.get("file", {}))
        doc["images"].append(carried["image"])
        keyed = [("annotations", a) for a in carried["annotations"]]
        keyed += [("occlusion_pairs", p) for p in carried["occlusion_pairs"]]
        items += [(k, *item) for k, item in zip(carried.get("positions") or range(len(keyed)), keyed)]
        used.update((c.get("id"), c) for c in carried["categories"])
    items.sort(key=lambda item: item[0])  # as the file held them
    for key in ("annotations", "occlusion_pairs"):
        doc[key] = [item for _, k, item in items if k == key]
    known = {c.get("id") for c in doc.get("categories", [])}
    doc["categories"] = doc.get("categories", []) + [c for k, c in sorted(used.items()) if k not in known]
    return doc


def _chosen_result(item: dict) -> tuple[list | None, bool]:
    """A task's latest annotation nobody cancelled (a person's), else its latest prediction (an
    export of Label Studio's own lists predictions by id only: then None)."""
    annotations = [a for a in item.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
    if annotations:
        latest = max(annotations, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), a.get("id", 0)))
        return latest.get("result") or [], True
    predictions = [p for p in item.get("predictions") or [] if isinstance(p, dict)]
    return (predictions[-1].get("result") or [], False) if predictions else (None, False)


def _image_back(
    image: ExportImage, result: list, by_person: bool, ids: dict[str, int], problems: Counter
) -> ReturnedImage:
    """One task's regions grouped by object (parts by their region ids), and its relations."""
    width, height = image.image["width"], image.image["height"]
    exported = {obj.annotation["id"] for obj in image.objects}
    outlines: dict[int, dict[str, list]] = {}
    labels: dict[int, str] = {}
    relations = []
    for region in result:
        if region.get("type") == "relation":
            relations.append(region)
            continue
        match = REGION_ID.fullmatch(str(region.get("id", "")))
        value = region.get("value") or {}
        if region.get("type") != "polygonlabels" or not match or int(match[2]) not in exported:
            problems["regions that belong to no exported object (drawn anew?)"] += 1
            continue
        object_id, layer = int(match[2]), AMODAL if match[1] == "a" else VISIBLE
        outlines.setdefault(object_id, {}).setdefault(layer, []).append(pixels(value.get("points", []), width, height))
        if value.get("polygonlabels") and (layer == AMODAL or object_id not in labels):
            labels[object_id] = value["polygonlabels"][0]
    objects = {}
    for object_id, layers in outlines.items():
        category = ids.get(labels.get(object_id))
        if object_id in labels and category is None:
            problems["regions labelled with a name the file has no category of (label kept)"] += 1
        objects[object_id] = ReturnedObject(layers.get(AMODAL), layers.get(VISIBLE), category)
    edges = set()
    for relation in relations:
        ends = [REGION_ID.fullmatch(str(relation.get(key, ""))) for key in ("from_id", "to_id")]
        if not all(ends) or not all(int(m[2]) in objects for m in ends):
            problems["relations to a region of no object"] += 1
        elif ends[0][2] == ends[1][2]:
            problems["relations between outlines of one object"] += 1
        elif relation.get("direction", "right") not in ("right", "left"):
            problems["relations with no direction (bi)"] += 1
        else:
            front, behind = int(ends[0][2]), int(ends[1][2])
            edges.add((front, behind) if relation.get("direction", "right") == "right" else (behind, front))
    return ReturnedImage(image.image["id"], objects, edges, by_person)


def _as_written(obj: ExportObject, image: dict) -> tuple[list, list]:
    """An object's outlines as its task's regions hold them (percent, rounded), in pixels."""
    width, height = image["width"], image["height"]
    return tuple(
        [pixels(percent(p, width, height), width, height) for p in polygons] for polygons in (obj.amodal, obj.visible)
    )
