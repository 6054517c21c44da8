"""Real COCO files come out right: category ids are names, box-only annotations, boxes, file modes."""

import json
import os
import stat

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from amodalize.data.masks import box_union, rle_bbox
from tests.conftest import invoke


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """The same 6 synth scenes with one category, COCO's ids and ids counted from 0."""
    root = tmp_path_factory.mktemp("categories")
    for categories in ("one", "coco", "zero-based"):
        invoke(
            ["synth", root / categories, "--images", "6", "--size", "128", "--seed", "5", "--categories", categories]
        )
    return root


def test_synth_draws_category_ids_without_changing_the_scenes(scenes):
    docs = {c: json.loads((scenes / c / "modal.json").read_text()) for c in ("one", "coco", "zero-based")}
    masks = {c: [a["segmentation"] for a in d["annotations"]] for c, d in docs.items()}
    assert masks["one"] == masks["coco"] == masks["zero-based"]
    ids = {c: [a["category_id"] for a in d["annotations"]] for c, d in docs.items()}
    assert set(ids["one"]) == {1}
    assert len(set(ids["coco"])) > 5 and max(ids["coco"]) <= 90 and 12 not in ids["coco"]
    assert min(ids["zero-based"]) >= 0 and max(ids["zero-based"]) < 80
    assert {c["id"] for c in docs["coco"]["categories"]} >= set(ids["coco"])


def converted(path, out):
    """(annotations' amodal fields, occlusion pairs) of ``convert`` with the defaults."""
    invoke(["convert", path, out, "--workers", "1"])
    doc = json.loads(out.read_text())
    fields = ("segmentation", "bbox", "area", "amodal_confidence", "occluded_by")
    return [{k: a.get(k) for k in fields} for a in doc["annotations"]], doc["occlusion_pairs"]


@pytest.fixture(scope="module")
def conversions(scenes):
    """Each category set's scenes converted with the shipped model (model.categories none)."""
    return {c: converted(scenes / c / "modal.json", scenes / f"{c}.json") for c in ("one", "coco", "zero-based")}


def test_category_ids_change_no_edge_and_no_mask(conversions):
    anns, edges = conversions["one"]
    assert edges and any(a["occluded_by"] for a in anns)
    assert conversions["coco"] == conversions["zero-based"] == (anns, edges)


def test_permuted_ids_and_id_zero_change_nothing(scenes, conversions, tmp_path):
    doc = json.loads((scenes / "coco" / "modal.json").read_text())
    ids = sorted({a["category_id"] for a in doc["annotations"]})
    permuted = dict(zip(ids, reversed(ids)))
    permuted[ids[0]] = 0  # e.g. Label Studio's first class
    for ann in doc["annotations"]:
        ann["category_id"] = permuted[ann["category_id"]]
    doc["categories"].append({"id": 0, "name": "zero"})
    src = tmp_path / "permuted.json"
    src.write_text(json.dumps(doc))
    assert converted(src, tmp_path / "out.json") == conversions["coco"]


def square(x, y, side):
    return [[x, y, x + side, y, x + side, y + side, x, y + side]]


def coco_file(path, annotations, width=80, height=60):
    doc = {
        "info": {"description": "made by the test"},
        "licenses": [{"id": 1, "name": "mine"}],
        "images": [{"id": 7, "width": width, "height": height, "file_name": "7.jpg", "license": 1}],
        "annotations": annotations,
        "categories": [{"id": 0, "name": "zero"}, {"id": 3, "name": "three"}],
    }
    path.write_text(json.dumps(doc))
    return path


def ann(ann_id, segmentation, bbox, category=3, **extra):
    return {"id": ann_id, "image_id": 7, "category_id": category, "segmentation": segmentation, "bbox": bbox, **extra}


def test_box_only_annotation_kept_untouched_and_counted(tmp_path):
    box_only = ann(5, [], [40.5, 10.25, 12, 9], area=108, attributes={"occluded": False})
    src = coco_file(
        tmp_path / "in.json",
        [ann(1, square(5, 5, 20), [5, 5, 20, 20], area=400), box_only, ann(6, square(50, 30, 10), [50, 30, 10, 10])],
    )
    out = tmp_path / "out.json"
    result = invoke(["convert", src, out, "--method", "convex-r", "--order", "convex"])
    assert "1 box-only or empty annotations kept as they are" in result.stderr
    doc = json.loads(out.read_text())
    assert doc["annotations"][1] == box_only
    assert all(5 not in (p["occluder_id"], p["occludee_id"]) for p in doc["occlusion_pairs"])
    assert "visible_mask" in doc["annotations"][0] and "visible_mask" in doc["annotations"][2]


def test_unoccluded_objects_keep_their_input_fields_exactly(tmp_path):
    """A thin polygon loses pixels when rasterised; with nothing in front its fields stay the input's."""
    thin = ann(1, [[47.35, 5.75, 53.17, 5.75, 53.17, 32.93, 47.35, 32.93]], [47.35, 5.75, 5.82, 27.18], area=158.2)
    src = coco_file(tmp_path / "in.json", [thin, ann(2, square(5, 5, 20), [5, 5, 20, 20], area=400)])
    out = tmp_path / "out.json"
    invoke(["convert", src, out, "--workers", "1"])
    raw = out.read_text()
    assert [a["occluded_by"] for a in json.loads(raw)["annotations"]] == [[], []]
    written = json.loads(raw)["annotations"][0]
    assert (written["segmentation"], written["bbox"], written["area"]) == (thin["segmentation"], thin["bbox"], 158.2)
    assert rle_bbox(written["visible_mask"]) != thin["bbox"]  # the rasterised mask's box moved


def test_occluded_amodal_box_holds_the_input_box(tmp_path):
    """A bar behind a square: its completed box holds its declared box, even where that box is
    looser than its rasterised polygon."""
    bar = ann(1, [[2, 22, 30, 22, 30, 30, 2, 30], [50, 22, 78, 22, 78, 30, 50, 30]], [1.6, 21.2, 76.9, 9.3])
    front = ann(2, square(30, 10, 20), [30, 10, 20, 20])
    src = coco_file(tmp_path / "in.json", [bar, front])
    out = tmp_path / "out.json"
    invoke(["convert", src, out, "--workers", "1", "--method", "convex-r", "--order", "convex"])
    written = json.loads(out.read_text())["annotations"][0]
    assert written["occluded_by"] == [2]
    assert box_union(written["bbox"], bar["bbox"]) == written["bbox"]
    assert mask_utils.area(written["segmentation"]) > mask_utils.area(written["visible_mask"])


def test_outputs_get_the_mode_of_a_new_file(tmp_path):
    src = coco_file(tmp_path / "in.json", [ann(1, square(5, 5, 20), [5, 5, 20, 20])])
    out = tmp_path / "out.json"
    out.write_text("{}")
    out.chmod(0o600)  # replaced, the file still gets the umask's mode
    old = os.umask(0o022)
    try:
        invoke(["convert", src, out, "--method", "raw", "--order", "area"])
        fresh = tmp_path / "fresh.json"
        invoke(["convert", src, fresh, "--method", "raw", "--order", "area"])
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == stat.S_IMODE(fresh.stat().st_mode) == 0o644


def test_amodal_confidence_inside_zero_one(conversions):
    anns, _ = conversions["coco"]
    confidences = np.array([a["amodal_confidence"] for a in anns if a["amodal_confidence"] is not None])
    assert len(confidences) == len(anns) and (confidences > 0).all() and (confidences < 1).all()


def test_visualize_unknown_image_ids_fail(tmp_path):
    src = coco_file(tmp_path / "in.json", [ann(1, square(5, 5, 20), [5, 5, 20, 20])])
    result = invoke(["visualize", src, tmp_path / "pics", "--images", "7,1,2"], exit_code=2)
    assert "has no image with id 1, 2" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "pics").exists()


def test_visualize_names_missing_image_files(tmp_path):
    import cv2

    src = coco_file(tmp_path / "in.json", [ann(1, square(5, 5, 20), [5, 5, 20, 20])])
    doc = json.loads(src.read_text())
    doc["images"].append({"id": 8, "width": 80, "height": 60, "file_name": "8.jpg"})
    doc["annotations"].append({**ann(2, square(5, 5, 20), [5, 5, 20, 20]), "image_id": 8})
    src.write_text(json.dumps(doc))
    images = tmp_path / "images"
    images.mkdir()
    result = invoke(["visualize", src, tmp_path / "none", "--images-dir", images], exit_code=2)
    assert f"{images}: holds none of the 2 images asked for" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "none").exists()
    cv2.imwrite(str(images / "8.jpg"), np.full((60, 80, 3), 128, np.uint8))
    lines = invoke(["visualize", src, tmp_path / "pics", "--images-dir", images]).stderr.strip().splitlines()
    assert "'7.jpg' not found" in lines[0]
    assert lines[-1].startswith("wrote 2 pictures") and "1 of them on a blank canvas" in lines[-1]


@pytest.mark.parametrize("method", ["pcnet", "convex-r"])
def test_a_file_of_box_only_annotations_is_written_back_with_nothing_completed(tmp_path, method):
    boxes = [ann(5, [], [40.5, 10.25, 12, 9], area=108), ann(6, [], [1, 1, 5, 5], iscrowd=0)]
    src = coco_file(tmp_path / "in.json", boxes)
    out = tmp_path / "out.json"
    said = invoke(["convert", src, out, "--method", method]).stderr
    assert "nothing completed: none of the 2 annotations has a visible mask" in said and "Traceback" not in said
    doc = json.loads(out.read_text())
    source = json.loads(src.read_text())
    assert doc["annotations"] == source["annotations"] and doc["images"] == source["images"]
    assert doc["occlusion_pairs"] == [] and doc["licenses"] == source["licenses"]
    empty = coco_file(tmp_path / "empty.json", [])
    assert "no annotation with a visible mask" in invoke(["convert", empty, tmp_path / "o2.json"]).stderr
    result = invoke(["train", src, "--out", tmp_path / "run"], exit_code=2)
    assert "no annotation has a visible mask" in result.stderr and "Traceback" not in result.stderr


def test_polygons_outside_the_image_are_clipped_named_and_kept_once(tmp_path):
    reaching = [[-500.0, 10, 70, 10, 70, 40, -500.0, 40]]  # far out on the left
    src = coco_file(
        tmp_path / "in.json", [ann(1, reaching, [0, 10, 70, 30]), ann(2, square(5, 45, 10), [5, 45, 10, 10])]
    )
    out = tmp_path / "out.json"
    said = invoke(["convert", src, out, "--method", "convex-r", "--order", "convex"]).stderr
    assert "1 annotations have polygon points outside their image (ids 1)" in said
    first = json.loads(out.read_text())["annotations"][0]
    assert first["segmentation"] == reaching and "visible_polygons" not in first  # as given, stored once
    assert rle_bbox(first["visible_mask"]) == [0.0, 10.0, 70.0, 30.0]  # the part inside the image


def test_logs_get_plain_progress_lines(tmp_path):
    """stderr that is not a terminal (here the test runner's) gets progress lines, not a bar."""
    src = coco_file(
        tmp_path / "in.json", [ann(1, square(5, 5, 20), [5, 5, 20, 20]), ann(2, square(24, 5, 20), [24, 5, 20, 20])]
    )
    said = invoke(["convert", src, tmp_path / "out.json", "--method", "convex-r", "--order", "convex"]).stderr
    assert "converting images: 0/1 (0%)" in said and "converting images: 1/1 (100%)" in said
    assert "━" not in said
