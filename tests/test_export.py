"""Polygons where tools need them, and the export targets, on data the tests make."""

import json

import numpy as np
import pytest
import yaml
from pycocotools import mask as mask_utils

from amodalize.data.masks import Crop, encode_crop, mask_to_polygons, rle_iou, rle_merge, to_rle
from amodalize.export import labelstudio
from tests.conftest import invoke


def test_polygons_follow_the_pixel_edges():
    """Rasterised again, the polygons are the mask (no hole): pycocotools gives it back exactly."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = np.zeros((40, 50), bool)
        for _ in range(3):
            y, x, h, w = rng.integers(0, 30), rng.integers(0, 40), rng.integers(1, 10), rng.integers(1, 10)
            mask[y : y + h, x : x + w] = True
        rle = encode_crop(Crop(mask), 40, 50)
        assert rle_iou(to_rle(mask_to_polygons(mask), 40, 50), rle) == 1.0


def test_the_largest_part_comes_first_and_offsets_apply():
    mask = np.zeros((10, 20), bool)
    mask[1:3, 1:3] = True
    mask[4:9, 8:18] = True
    polygons = mask_to_polygons(mask, x0=100, y0=50)
    assert len(polygons) == 2 and min(polygons[0][::2]) == 108 and min(polygons[0][1::2]) == 54


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Synth scenes converted without a model (RLE and polygons), with their ground truth."""
    root = tmp_path_factory.mktemp("export")
    invoke(["synth", root, "--images", "4", "--size", "96", "--seed", "8", "--categories", "coco", "--render"])
    for seg in ("rle", "polygon"):
        args = ["convert", root / "modal.json", root / f"{seg}.json", "--method", "convex-r", "--order", "convex"]
        invoke([*args, "--segmentation", seg])
    return root


def test_segmentation_polygon_writes_the_same_masks(converted):
    rle, poly = (json.loads((converted / f"{s}.json").read_text()) for s in ("rle", "polygon"))
    occluded, ious = 0, []
    for a, b in zip(rle["annotations"], poly["annotations"]):
        assert isinstance(b["segmentation"], list) and (a["bbox"], a["area"]) == (b["bbox"], b["area"])
        h, w = a["segmentation"]["size"]
        traced = to_rle(b["segmentation"], h, w)
        ious.append(mask_utils.iou([traced], [a["segmentation"]], [0])[0, 0])
        assert rle_iou(rle_merge([traced, a["segmentation"]]), traced) == 1.0  # no pixel lost; holes are filled
        occluded += bool(a["occluded_by"])
    assert occluded and poly["occlusion_pairs"] == rle["occlusion_pairs"]
    assert np.median(ious) == 1.0


def test_label_studio_tasks_hold_both_outlines_relations_and_scores(converted, tmp_path):
    result = invoke(["export", converted / "rle.json", "--to", "labelstudio", tmp_path])
    doc = json.loads((converted / "rle.json").read_text())
    tasks = json.loads((tmp_path / labelstudio.TASKS).read_text())
    assert len(tasks) == len(doc["images"]) and f"{len(tasks)} tasks" in result.stderr
    regions = [r for t in tasks for r in t["predictions"][0]["result"] if r["type"] == "polygonlabels"]
    relations = [r for t in tasks for r in t["predictions"][0]["result"] if r["type"] == "relation"]
    ids = {r["id"] for r in regions}
    assert {a["id"] for a in doc["annotations"]} == {int(i[1:].split("-")[0]) for i in ids}
    assert len(relations) == len(doc["occlusion_pairs"])
    assert all(r["from_id"] in ids and r["to_id"] in ids for r in relations)
    assert all(0 <= x <= 100 and 0 <= y <= 100 for r in regions for x, y in r["value"]["points"])
    config = (tmp_path / labelstudio.CONFIG).read_text()
    assert 'name="amodal"' in config and 'name="visible"' in config and "occludes" in config


def test_yolo_labels_one_line_per_object(converted, tmp_path):
    invoke(["export", converted / "rle.json", "--to", "yolo", tmp_path, "--images-dir", converted / "images"])
    doc = json.loads((converted / "rle.json").read_text())
    data = yaml.safe_load((tmp_path / "data.yaml").read_text())
    assert data["train"] == data["val"] and "no split is made" in (tmp_path / "data.yaml").read_text()
    lines = [line.split() for p in (tmp_path / "labels").glob("*.txt") for line in p.read_text().splitlines()]
    assert len(lines) == len(doc["annotations"]) and len(list((tmp_path / "images").iterdir())) == 4
    names = [c["name"] for c in sorted(doc["categories"], key=lambda c: c["id"])]
    assert list(data["names"].values()) == names
    assert all(len(line) % 2 == 1 and 0 <= float(v) <= 1 for line in lines for v in line[1:])


def test_cvat_file_carries_attributes_and_visible_outlines(converted, tmp_path):
    invoke(["export", converted / "rle.json", "--to", "cvat", tmp_path])
    doc = json.loads((converted / "rle.json").read_text())
    out = json.loads((tmp_path / "annotations" / "instances_default.json").read_text())
    assert len(out["annotations"]) == 2 * len(doc["annotations"])
    amodal = {a["attributes"]["object"]: a for a in out["annotations"] if a["attributes"]["outline"] == "amodal"}
    visible = {a["attributes"]["object"]: a for a in out["annotations"] if a["attributes"]["outline"] == "visible"}
    assert set(amodal) == set(visible) == {a["id"] for a in doc["annotations"]}
    for ann in doc["annotations"]:
        attributes = amodal[ann["id"]]["attributes"]
        assert attributes["occluded_by"] == " ".join(map(str, ann["occluded_by"]))
        # CVAT renumbers annotations: occluded_by must name what survives, the object attribute
        assert all(int(k) in amodal for k in attributes["occluded_by"].split())


def test_export_of_an_unconverted_file_is_one_line(converted, tmp_path):
    result = invoke(["export", converted / "modal.json", "--to", "yolo", tmp_path / "y"], exit_code=2)
    assert "run `amodalize convert`" in result.stderr and not (tmp_path / "y").exists()


def test_each_target_is_one_module_the_cli_offers(tmp_path):
    from amodalize.export import TARGETS, exporter

    for target in TARGETS:
        module = exporter(target)
        assert module.__name__ == f"amodalize.export.{target}" and callable(module.export) and callable(module.summary)
    with pytest.raises(ValueError, match="choose from labelstudio, cvat, yolo"):
        exporter("coco")
    said = " ".join(invoke(["export", "--help"]).stdout.split())
    assert "[labelstudio|cvat|yolo]" in said
