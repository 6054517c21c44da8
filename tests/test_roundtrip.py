"""The round trip: converted labels out to Label Studio or CVAT, fixed there, and back (``import``),
on files the tests make and edit as a person would."""

import copy
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from amodalize.check.changes import changes
from amodalize.data.masks import (
    Crop,
    decode_crop,
    encode_crop,
    rle_area,
    rle_intersection_area,
    rle_iou,
    rle_to_polygons,
    to_rle,
)
from amodalize.export.labelstudio import REGION_ID
from tests.conftest import invoke


def _without_import_record(doc):
    doc = copy.deepcopy(doc)
    doc["info"]["amodalize"].pop("imported")
    return doc


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Synth scenes converted without a model, with a crowd region and a field no tool shows."""
    root = tmp_path_factory.mktemp("roundtrip")
    invoke(["synth", root, "--images", "4", "--size", "96", "--seed", "12", "--categories", "coco"])
    invoke(["convert", root / "modal.json", root / "c.json", "--method", "convex-r", "--order", "convex"])
    doc = json.loads((root / "c.json").read_text())
    doc["annotations"][0]["reviewer_note"] = "kept through the tools"
    crowd = {
        "id": 9999,
        "image_id": doc["images"][0]["id"],
        "category_id": doc["annotations"][0]["category_id"],
        "iscrowd": 1,
        "segmentation": [[1, 1, 10, 1, 10, 10, 1, 10]],
        "bbox": [1, 1, 9, 9],
        "area": 81,
    }
    doc["annotations"].append(crowd)
    (root / "c.json").write_text(json.dumps(doc))
    return root


def _ls_export(folder, converted, edit=None):
    """``export --to labelstudio``, then the tasks as Label Studio's JSON export gives them back:
    each prediction made a person's annotation, changed by ``edit(task)``."""
    invoke(["export", converted / "c.json", "--to", "labelstudio", folder])
    tasks = json.loads((folder / "tasks.json").read_text())
    for n, task in enumerate(tasks):
        task["id"] = n + 1
        result = copy.deepcopy(task["predictions"][0]["result"])
        task["annotations"] = [{"id": n + 1, "result": result, "was_cancelled": False, "updated_at": "2026-12-07"}]
        if edit:
            edit(task)
    (folder / "export.json").write_text(json.dumps(tasks))
    return folder / "export.json"


def test_label_studio_tasks_come_back_unchanged(converted, tmp_path):
    invoke(["export", converted / "c.json", "--to", "labelstudio", tmp_path])
    task = json.loads((tmp_path / "tasks.json").read_text())[0]
    assert task["data"]["image"].startswith("/data/local-files/?d=images/")
    result = invoke(["import", tmp_path / "tasks.json", tmp_path / "back.json"])
    back = json.loads((tmp_path / "back.json").read_text())
    assert _without_import_record(back) == json.loads((converted / "c.json").read_text())
    assert "0 edges reversed" in result.stderr and "0 objects edited" in result.stderr
    crowd = [a for a in back["annotations"] if a["id"] == 9999]
    assert crowd and crowd[0]["iscrowd"] == 1  # crowd regions travel in the task data


def test_outlines_as_exported_give_every_mask_back(converted, tmp_path):
    """Every object as if edited: its masks from its outlines alone lose no pixel and hold IoU >= 0.99
    with the mask, its holes filled as the polygon export documents (the scenes hold rings)."""
    from amodalize.export.labelstudio import read_back
    from amodalize.export.restore import edited

    invoke(["export", converted / "c.json", "--to", "labelstudio", tmp_path])
    returned = read_back(tmp_path / "tasks.json")
    sizes = {im["id"]: (im["height"], im["width"]) for im in returned.base["images"]}
    anns = {a["id"]: a for a in returned.base["annotations"]}
    ious, holes = [], 0
    for image in returned.images:
        h, w = sizes[image.image_id]
        for object_id, got in image.objects.items():
            made = edited(anns[object_id], got, h, w)
            for key in ("segmentation", "visible_mask"):
                mask, was = to_rle(made[key], h, w), to_rle(anns[object_id][key], h, w)
                filled = to_rle(rle_to_polygons(was), h, w)
                assert rle_intersection_area(mask, was) == rle_area(was)
                ious.append(rle_iou(mask, filled))
                holes += rle_area(filled) > rle_area(was)
    assert len(ious) > 20 and min(ious) >= 0.99 and holes


def test_edits_in_label_studio_come_back(converted, tmp_path):
    doc = json.loads((converted / "c.json").read_text())
    pair = doc["occlusion_pairs"][0]
    image_id, front, behind = pair["image_id"], pair["occluder_id"], pair["occludee_id"]
    moved, deleted_visible = {}, {}

    def edit(task):
        if task["data"]["coco_image_id"] != image_id:
            return
        result = task["annotations"][0]["result"]
        for r in result:
            if r["type"] == "relation" and (r["from_id"], r["to_id"]) == (f"a{front}", f"a{behind}"):
                r["direction"] = "left"  # the person says the other one is in front
        regions = [r for r in result if r["type"] == "polygonlabels"]
        # move one vertex of the back object's amodal outline well outside it
        amodal = next(r for r in regions if r["id"] == f"a{behind}")
        amodal["value"]["points"][0] = [max(0.0, amodal["value"]["points"][0][0] - 20), 0.0]
        moved["id"] = behind
        # delete the visible outline of another object, and every region of a third
        others = sorted({int(REGION_ID.fullmatch(r["id"])[2]) for r in regions} - {front, behind})
        deleted_visible["id"], gone = others[0], others[1]
        result[:] = [
            r
            for r in result
            if r.get("id") not in (f"v{others[0]}",)
            and not (r["type"] == "polygonlabels" and int(REGION_ID.fullmatch(r["id"])[2]) == gone)
            and gone
            not in {int(m[2]) for m in (REGION_ID.fullmatch(str(r.get(k, ""))) for k in ("from_id", "to_id")) if m}
        ]
        deleted_visible["gone"] = gone
        # a region drawn anew and a relation between the two outlines of one object
        result.append({"id": "xYz", "type": "polygonlabels", "value": {"points": [[1, 1], [5, 1], [5, 5]]}})
        result.append({"type": "relation", "from_id": f"a{front}", "to_id": f"v{front}", "direction": "right"})

    exported = _ls_export(tmp_path / "ls", converted, edit)
    result = invoke(["import", exported, tmp_path / "fixed.json", "--changes", tmp_path / "changes.json"])
    fixed = json.loads((tmp_path / "fixed.json").read_text())
    anns = {a["id"]: a for a in fixed["annotations"]}
    edges = {(p["image_id"], p["occluder_id"], p["occludee_id"]): p for p in fixed["occlusion_pairs"]}
    assert (image_id, behind, front) in edges and (image_id, front, behind) not in edges
    assert edges[(image_id, behind, front)]["checked"] is True
    assert behind in anns[front]["occluded_by"] and front not in anns[behind]["occluded_by"]
    old = {a["id"]: a for a in doc["annotations"]}
    assert anns[behind]["checked"] and anns[behind]["amodal_confidence"] == 1.0
    assert rle_area(anns[behind]["segmentation"]) > rle_area(old[behind]["segmentation"])
    kept = anns[deleted_visible["id"]]
    h, w = kept["segmentation"]["size"]
    # its visible outline deleted: the old visible mask inside its amodal one, which is the same
    assert kept["checked"] and rle_iou(to_rle(kept["visible_mask"], h, w), old[kept["id"]]["visible_mask"]) == 1.0
    assert deleted_visible["gone"] not in anns
    untouched = [a for a in doc["annotations"] if a["image_id"] != image_id]
    assert all(anns[a["id"]] == a for a in untouched)
    said = json.loads((tmp_path / "changes.json").read_text())
    assert said["edges"]["reversed"] == 1 and said["objects"]["deleted"] == 1 and said["objects"]["edited"] == 1
    assert said["edited"][0]["id"] == behind and said["edited"][0]["amodal_iou"] < 1.0
    assert "1 regions that belong to no exported object" in result.stderr
    assert "1 relations between outlines of one object" in result.stderr
    assert "1 edges reversed" in result.stderr
    compared = invoke(["evaluate", converted / "c.json", tmp_path / "fixed.json", "--fixed", "--json"])
    assert json.loads(compared.stdout)["changes"]["edges"] == said["edges"]
    assert "1 edges reversed" in invoke(["evaluate", converted / "c.json", tmp_path / "fixed.json", "--fixed"]).stderr
    # --gt-format says how to read the fixed file too
    misread = invoke(["evaluate", converted / "c.json", tmp_path / "fixed.json", "--fixed", "--gt-format", "cocoa"], 2)
    assert "fixed.json" in misread.stderr and len(misread.stderr.strip().splitlines()) == 1


def test_cvat_export_comes_back_with_ids_restored(converted, tmp_path):
    invoke(["export", converted / "c.json", "--to", "cvat", tmp_path / "cvat"])
    path = tmp_path / "cvat" / "annotations" / "instances_default.json"
    cvat = json.loads(path.read_text())
    # CVAT renumbers images, annotations and categories on import and export
    for n, image in enumerate(cvat["images"]):
        old = image["id"]
        image["id"] = 100 + n
        for ann in cvat["annotations"]:
            if ann["image_id"] == old:
                ann["image_id"] = image["id"]
    for n, ann in enumerate(cvat["annotations"]):
        ann["id"] = 5000 + n
        ann["attributes"]["object"] = str(ann["attributes"]["object"])  # numbers may come back as text
    path.write_text(json.dumps(cvat))
    with zipfile.ZipFile(tmp_path / "cvat.zip", "w") as archive:
        archive.write(path, "annotations/instances_default.json")
    invoke(["import", tmp_path / "cvat.zip", tmp_path / "back.json", "--like", converted / "c.json"])
    back = json.loads((tmp_path / "back.json").read_text())
    assert _without_import_record(back) == json.loads((converted / "c.json").read_text())
    missing = invoke(["import", tmp_path / "cvat.zip", tmp_path / "x.json"], exit_code=2)
    assert "--like CONVERTED" in missing.stderr and "Traceback" not in missing.stderr
    assert not (tmp_path / "x.json").exists()

    # a person's fixes: the order reversed through occluded_by, an outline moved, one deleted
    doc = json.loads((converted / "c.json").read_text())
    pair = doc["occlusion_pairs"][0]
    front, behind = pair["occluder_id"], pair["occludee_id"]
    for ann in cvat["annotations"]:
        obj, outline = int(ann["attributes"]["object"]), ann["attributes"]["outline"]
        occluders = ann["attributes"].get("occluded_by", "").split()
        if outline == "amodal" and obj == behind:
            ann["attributes"]["occluded_by"] = " ".join(o for o in occluders if o != str(front))
            ann["segmentation"][0][0] = 0.0
            ann["segmentation"][0][1] = 0.0
        if outline == "amodal" and obj == front:
            ann["attributes"]["occluded_by"] = " ".join([*occluders, str(behind)])
    cvat["annotations"] = [
        a
        for a in cvat["annotations"]
        if not (a["attributes"]["outline"] == "visible" and int(a["attributes"]["object"]) == front)
    ]
    shutil.rmtree(tmp_path / "cvat2", ignore_errors=True)
    (tmp_path / "cvat2" / "annotations").mkdir(parents=True)
    (tmp_path / "cvat2" / "annotations" / "instances_default.json").write_text(json.dumps(cvat))
    invoke(["import", tmp_path / "cvat2", tmp_path / "fixed.json", "--like", converted / "c.json"])
    fixed = json.loads((tmp_path / "fixed.json").read_text())
    done = changes(doc, fixed)
    assert done["edges"]["reversed"] == 1 and done["objects"]["edited"] == 1 and done["objects"]["deleted"] == 0
    assert done["edited"][0]["id"] == behind
    anns = {a["id"]: a for a in fixed["annotations"]}
    assert anns[front]["occluded_by"].count(behind) == 1 and anns[front]["checked"]


def test_the_imported_file_opens_everywhere(tmp_path):
    """A file converted with the defaults (confidences, which report reads), fixed and imported."""
    invoke(["synth", tmp_path, "--images", "2", "--size", "96", "--seed", "3", "--render"])
    invoke(["convert", tmp_path / "modal.json", tmp_path / "c.json"])
    exported = _ls_export(tmp_path / "ls", tmp_path)
    invoke(["import", exported, tmp_path / "fixed.json"])
    invoke(["evaluate", tmp_path / "fixed.json", tmp_path / "gt.json"])
    invoke(["report", tmp_path / "fixed.json", tmp_path / "report"])
    for target in ("labelstudio", "cvat", "yolo"):
        invoke(["export", tmp_path / "fixed.json", "--to", target, tmp_path / target])
    args = ["maskrcnn", "train", tmp_path / "fixed.json", "--images-dir", tmp_path / "images", "--out", tmp_path / "mr"]
    invoke([*args, "--iters", "1", "--device", "cpu", "--model", "mnv3-fpn", "--learned-floor", "0"])


def test_bad_exports_get_one_line(converted, tmp_path):
    (tmp_path / "not.json").write_text('[{"no": "data"}]')
    result = invoke(["import", tmp_path / "not.json", tmp_path / "x.json"], exit_code=2)
    assert "is not a Label Studio JSON export" in result.stderr and "Traceback" not in result.stderr
    (tmp_path / "old.json").write_text(json.dumps([{"data": {"image": "a.jpg", "coco_image_id": 1}}]))
    result = invoke(["import", tmp_path / "old.json", tmp_path / "x.json"], exit_code=2)
    assert "carries no amodalize data" in result.stderr and not (tmp_path / "x.json").exists()


def test_multi_part_objects_are_grouped_by_object(converted, tmp_path):
    """Regions 'a7' and 'a7-2' are one object: the relation names its first part, and deleting
    the second part shrinks that one object's mask."""
    doc = json.loads((converted / "c.json").read_text())
    pair = doc["occlusion_pairs"][0]
    behind = next(a for a in doc["annotations"] if a["id"] == pair["occludee_id"])
    h, w = behind["segmentation"]["size"]
    far = np.zeros((h, w), bool)
    far[h - 6 : h - 2, w - 6 : w - 2] = True  # a second part, apart from the rest
    two = encode_crop(Crop(decode_crop(to_rle(behind["segmentation"], h, w)).within((0, 0, w, h)) | far), h, w)
    behind["segmentation"] = two
    (tmp_path / "c.json").write_text(json.dumps(doc))
    invoke(["export", tmp_path / "c.json", "--to", "labelstudio", tmp_path])
    tasks = json.loads((tmp_path / "tasks.json").read_text())
    task = next(t for t in tasks if t["data"]["coco_image_id"] == behind["image_id"])
    result = task["predictions"][0]["result"]
    assert {f"a{behind['id']}", f"a{behind['id']}-2"} <= {r.get("id") for r in result}
    result[:] = [r for r in result if r.get("id") != f"a{behind['id']}-2"]
    (tmp_path / "tasks.json").write_text(json.dumps(tasks))
    invoke(["import", tmp_path / "tasks.json", tmp_path / "back.json"])
    back = json.loads((tmp_path / "back.json").read_text())
    got = next(a for a in back["annotations"] if a["id"] == behind["id"])
    assert rle_area(got["segmentation"]) == rle_area(two) - 16 and got["checked"]
    assert pair["occluder_id"] in got["occluded_by"]


@pytest.mark.parametrize("name", ["5.json"])
def test_cocoa_demo_round_trip(name, cocoa_files, tmp_path):
    invoke(["convert", cocoa_files / name, tmp_path / "c.json", "--method", "convex-r", "--order", "convex"])
    invoke(["export", tmp_path / "c.json", "--to", "labelstudio", tmp_path / "ls"])
    invoke(["import", tmp_path / "ls" / "tasks.json", tmp_path / "ls.json"])
    invoke(["export", tmp_path / "c.json", "--to", "cvat", tmp_path / "cvat"])
    invoke(["import", tmp_path / "cvat", tmp_path / "cvat.json", "--like", tmp_path / "c.json"])
    doc = json.loads((tmp_path / "c.json").read_text())
    for out in ("ls", "cvat"):
        assert _without_import_record(json.loads((tmp_path / f"{out}.json").read_text())) == doc


def test_tasks_left_out_of_the_export_are_named_or_kept_with_like(converted, tmp_path):
    """Label Studio exports only the annotated tasks unless asked for all: those missing are said,
    and --like keeps their images as converted."""
    exported = _ls_export(tmp_path / "ls", converted)
    tasks = json.loads(exported.read_text())
    exported.write_text(json.dumps(tasks[:1]))
    result = invoke(["import", exported, tmp_path / "alone.json"])
    assert f"{len(tasks) - 1} images whose task is not in the export, left out" in result.stderr
    assert len(json.loads((tmp_path / "alone.json").read_text())["images"]) == 1
    result = invoke(["import", exported, tmp_path / "like.json", "--like", converted / "c.json"])
    assert f"{len(tasks) - 1} kept as converted" in result.stderr and "left out" not in result.stderr
    like = json.loads((tmp_path / "like.json").read_text())
    assert _without_import_record(like) == json.loads((converted / "c.json").read_text())


@pytest.mark.slow
def test_a_running_label_studio_round_trip(tmp_path):
    """scripts/check_labelstudio.py against pip's label-studio (AMODALIZE_LABEL_STUDIO names it)."""
    executable = os.environ.get("AMODALIZE_LABEL_STUDIO")
    if not executable:
        pytest.skip("set AMODALIZE_LABEL_STUDIO to a label-studio executable to run the round trip through it")
    invoke(["synth", tmp_path, "--images", "3", "--size", "96", "--seed", "5", "--render"])
    invoke(["convert", tmp_path / "modal.json", tmp_path / "c.json"])
    script = Path(__file__).resolve().parents[1] / "scripts" / "check_labelstudio.py"
    args = [tmp_path / "c.json", tmp_path / "images", "--label-studio", executable, "--work", tmp_path / "ls"]
    done = subprocess.run([sys.executable, script, *map(str, args), "--edit", "1"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout)
    assert figures["images_shown"] == figures["tasks_stored"] == 3
    for name in ("all-tasks", "annotated-tasks"):
        row = figures[name]
        assert row["exit"] == 0 and row["images"] == 3 and row["untouched_images_identical"]
        assert row["changes"]["edges"]["reversed"] == 1
