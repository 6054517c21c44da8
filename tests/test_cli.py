"""The CLI end to end on tiny data: real COCOA files, synth scenes and broken inputs."""

import json

import pytest
from pycocotools.coco import COCO

from tests.conftest import invoke, regions


@pytest.mark.parametrize(
    "method, order", [("raw", "area"), ("raw", "y-axis"), ("convex", "convex"), ("convex-r", "convex")]
)
def test_convert_then_evaluate_on_cocoa(tmp_path, cocoa_files, method, order):
    src = cocoa_files / "3.json"
    out = tmp_path / "out.json"
    invoke(["convert", src, out, "--method", method, "--order", order, "--workers", "1"])
    metrics = json.loads(invoke(["evaluate", out, src, "--json"]).stdout)
    assert metrics["instances"] == regions(src) and metrics["order_pairs"] > 0
    assert 0 <= metrics["order_acc"] <= 1 and 0.5 < metrics["pooled_iou"] < 1
    doc = json.loads(out.read_text())
    assert doc["info"]["amodalize"]["method"] == method
    assert doc["info"]["amodalize"]["order_method"] == order
    COCO(str(out))  # loads in pycocotools unchanged


def test_output_keeps_every_input_field(tmp_path, cocoa_files):
    out = tmp_path / "out.json"
    invoke(["convert", cocoa_files / "2.json", out])
    src = json.loads((cocoa_files / "2.json").read_text())
    doc = json.loads(out.read_text())
    image = doc["images"][0]
    assert image["cocoa"] == {k: v for k, v in src.items() if k != "regions"}
    for region, ann in zip(src["regions"], doc["annotations"]):
        kept = {**ann, **ann.get("source_fields", {})}  # overwritten input values live in source_fields
        assert {k: kept[k] for k in region} == region
        assert set(ann) >= {
            "segmentation",
            "bbox",
            "area",
            "visible_mask",
            "visible_bbox",
            "visible_area",
            "invisible_mask",
            "occlude_rate",
            "occluded_by",
        }
    pairs = {(p["occluder_id"], p["occludee_id"]) for p in doc["occlusion_pairs"]}
    from_anns = {(o, a["id"]) for a in doc["annotations"] for o in a["occluded_by"]}
    assert pairs == from_anns and pairs


def test_coco_polygons_kept_and_kins_compat(tmp_path):
    poly = [[10, 10, 30, 10, 30, 30, 10, 30]]
    src = tmp_path / "in.json"
    src.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "width": 50, "height": 50}, {"id": 2, "width": 50, "height": 50}],
                "annotations": [
                    {
                        "id": 9,
                        "image_id": 1,
                        "category_id": 1,
                        "segmentation": poly,
                        "bbox": [10, 10, 20, 20],
                        "area": 400,
                        "note": "mine",
                    }
                ],
                "categories": [{"id": 1, "name": "x"}],
            }
        )
    )
    out = tmp_path / "out.json"
    invoke(["convert", src, out, "--compat", "kins"])
    ann = json.loads(out.read_text())["annotations"][0]
    assert "visible_polygons" not in ann and ann["note"] == "mine"  # the polygon is stored once
    assert ann["visible_bbox"] == [10, 10, 20, 20] and ann["visible_area"] == 400
    assert ann["visible_mask"] == ann["inmodal_seg"]
    assert (ann["segmentation"], ann["bbox"], ann["area"]) == (poly, [10, 10, 20, 20], 400)  # nothing hides it
    assert ann["occluded_by"] == [] and ann["occlude_rate"] == 0.0 and "source_fields" not in ann


BROKEN = {
    "not-json": "{",
    "list-top": "[1, 2]",
    "no-annotations": json.dumps({"images": [{"id": 1, "width": 4, "height": 4}]}),
    "missing-image": json.dumps(
        {
            "images": [{"id": 1, "width": 9, "height": 9}],
            "annotations": [{"id": 1, "image_id": 2, "category_id": 1, "segmentation": [[1, 1, 5, 1, 5, 5]]}],
        }
    ),
    "short-polygon": json.dumps(
        {
            "images": [{"id": 1, "width": 9, "height": 9}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[1, 1, 5, 1]]}],
        }
    ),
    "empty": json.dumps({"images": [], "annotations": []}),
    "corrupt-rle": json.dumps(
        {
            "images": [{"id": 1, "width": 20, "height": 20}],
            "annotations": [
                {"id": 1, "image_id": 1, "category_id": 1, "segmentation": {"size": [20, 20], "counts": "Y3~~0k4"}}
            ],
        }
    ),
    "truncated-rle": json.dumps(  # a valid 20x20 mask's counts with their end cut off
        {
            "images": [{"id": 1, "width": 20, "height": 20}],
            "annotations": [
                {"id": 1, "image_id": 1, "category_id": 1, "segmentation": {"size": [20, 20], "counts": "Y35?0000"}}
            ],
        }
    ),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_bad_input_one_line_error_no_output(tmp_path, name):
    src = tmp_path / f"{name}.json"
    src.write_text(BROKEN[name])
    out = tmp_path / "out.json"
    result = invoke(["convert", src, out], exit_code=2)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(src) in lines[0]
    assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == [src]


def test_evaluate_with_foreign_gt_fails_cleanly(tmp_path, cocoa_files):
    out = tmp_path / "out.json"
    invoke(["convert", cocoa_files / "1.json", out, "--method", "raw"])
    result = invoke(["evaluate", out, cocoa_files / "3.json"], exit_code=2)
    assert "annotation ids do not match" in result.stderr


def test_synth_convert_evaluate_visualize(tmp_path):
    invoke(["synth", tmp_path / "s", "--images", "5", "--size", "96", "--seed", "2", "--render"])
    out = tmp_path / "out.json"
    invoke(["convert", tmp_path / "s" / "modal.json", out, "--workers", "2"])
    table = invoke(["evaluate", out, tmp_path / "s" / "gt.json"]).stderr
    assert "pooled IoU" in table
    invoke(["visualize", out, tmp_path / "pics", "--images", "1,2", "--images-dir", tmp_path / "s" / "images"])
    assert sorted(p.name for p in (tmp_path / "pics").iterdir()) == ["1.png", "2.png"]


def test_synth_draws_given_shapes_at_a_chosen_scale(tmp_path):
    """--shapes-scale 2 draws the --shapes-from objects twice their share of the scene's side: the
    median amodal object then covers several times the pixels (up to 4x; the frame cuts the largest)."""
    invoke(["synth", tmp_path / "src", "--images", "4", "--size", "96", "--seed", "3"])
    medians = {}
    for scale in ("1", "2"):
        out = tmp_path / f"x{scale}"
        invoke(
            ["synth", out, "--images", "6", "--size", "160", "--shapes-from", tmp_path / "src" / "gt.json"]
            + ["--shapes-scale", scale]
        )
        areas = sorted(a["area"] for a in json.loads((out / "gt.json").read_text())["annotations"])
        medians[scale] = areas[len(areas) // 2]
    assert 2 < medians["2"] / medians["1"] <= 4
    assert "--shapes-scale" in invoke(["synth", "--help"]).stdout


def test_help_lists_every_command():
    from amodalize.cli import cli

    text = invoke(["--help"]).stdout
    listed = {line.split()[0] for line in text.split("Commands:")[1].splitlines() if line.startswith("  ")}
    assert listed == set(cli.commands) and {"convert", "evaluate", "synth", "visualize", "export"} <= listed


def test_predicted_modal_masks_as_input(tmp_path):
    invoke(["synth", tmp_path / "s", "--images", "3", "--size", "96", "--seed", "4"])
    modal = json.loads((tmp_path / "s" / "modal.json").read_text())
    dets = [
        {"image_id": a["image_id"], "category_id": 1, "segmentation": a["segmentation"], "score": 0.3 + 0.2 * (k % 4)}
        for k, a in enumerate(modal["annotations"])
    ]
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    out = tmp_path / "out.json"
    invoke(
        [
            "convert",
            tmp_path / "dets.json",
            out,
            "--images-from",
            tmp_path / "s" / "modal.json",
            "--min-score",
            "0.5",
            "--eraser-dilate",
            "2",
        ]
    )
    doc = json.loads(out.read_text())
    kept = [d for d in dets if d["score"] >= 0.5]
    assert len(doc["annotations"]) == len(kept) > 0
    assert [a["score"] for a in doc["annotations"]] == [d["score"] for d in kept]
    assert [a["id"] for a in doc["annotations"]] == list(range(1, len(kept) + 1))
    assert doc["images"] == modal["images"] and doc["info"]["amodalize"]["input_format"] == "detections"
    bad = invoke(
        ["convert", tmp_path / "s" / "modal.json", out, "--images-from", tmp_path / "s" / "modal.json"], exit_code=2
    )
    assert "expected a list of detections" in bad.stderr


def test_help_says_what_each_option_does_on_its_command():
    synth = " ".join(invoke(["synth", "--help"]).stdout.split())
    assert "Format of the --shapes-from files" in synth and "Input format" not in synth
    train = " ".join(invoke(["train", "--help"]).stdout.split())
    assert "fine-tuned from the shipped 'general' for 300 steps" in train
