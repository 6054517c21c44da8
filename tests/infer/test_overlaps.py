"""Masks drawn over each other (COCO style): kinds of overlap, the order nesting gives, the partition
the network sees, and an output that keeps what was drawn."""

import json

import cv2
import numpy as np
import pytest
import torch

from amodalize.api import convert_file
from amodalize.data.masks import EMPTY, Crop, decode_crop, encode_crop, rle_area
from amodalize.data.records import Dataset, ImageRecord, Instance
from amodalize.data.synth import SynthOptions, draw_outlines, make_dataset, make_scene
from amodalize.data.writer import annotation_fields, augment
from amodalize.infer.batcher import Completer
from amodalize.infer.convert import ConvertOptions, convert_chunk
from amodalize.infer.overlaps import count_kinds, find_overlaps, partition
from tests.conftest import invoke
from tests.infer.test_pcnet import HullNet

SIZE = 64


def box(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def scene(*masks: np.ndarray) -> tuple[ImageRecord, list[Instance]]:
    """One image whose annotations are ``masks`` as drawn (ids 1, 2, ...)."""
    image = ImageRecord(1, SIZE, SIZE, None, {"id": 1, "width": SIZE, "height": SIZE})
    insts = []
    for k, mask in enumerate(masks, start=1):
        rle = encode_crop(Crop(mask), SIZE, SIZE)
        bbox = list(map(float, cv2.boundingRect(mask.astype(np.uint8))))
        source = {"id": k, "image_id": 1, "category_id": 1, "segmentation": rle, "bbox": bbox, "area": rle_area(rle)}
        insts.append(Instance(k, 1, 1, rle, bbox, source=source))
    return image, insts


def full(rle: dict) -> np.ndarray:
    return decode_crop(rle).within((0, 0, SIZE, SIZE))


def convert(image, insts, method="pcnet", order="pcnet"):
    completer = Completer(HullNet(), SIZE, device=torch.device("cpu"), batch_size=8) if method == "pcnet" else None
    return convert_chunk([(image, insts)], ConvertOptions(method, order), completer)[0]


def test_pairs_are_told_apart_by_how_much_of_the_smaller_mask_is_shared():
    table, fork = box(10, 54, 8, 56), box(20, 40, 30, 34)
    square, bar = box(16, 48, 16, 48), box(8, 56, 28, 36)
    left, right = box(10, 50, 4, 32), box(10, 50, 31, 60)  # one shared column of 40 px
    assert [o.kind for o in find_overlaps([Crop(table), Crop(fork)])] == ["nested"]
    (through,) = find_overlaps([Crop(square), Crop(bar)])
    assert through.kind == "overlapping" and (through.inner, through.outer) == (1, 0)
    assert through.pixels == 32 * 8 and through.share_j == pytest.approx(256 / (48 * 8))
    (sliver,) = find_overlaps([Crop(left), Crop(right)])
    assert sliver.kind == "sliver" and sliver.pixels == 40
    assert find_overlaps([Crop(box(0, 10, 0, 10)), Crop(box(0, 10, 10, 20))]) == []  # touching, not shared
    assert count_kinds([through, sliver]) == {"nested": 0, "overlapping": 1, "sliver": 1}


def test_partition_gives_each_shared_pixel_to_the_object_in_front():
    square, bar = Crop(box(16, 48, 16, 48)), Crop(box(8, 56, 28, 36))
    visible = partition([square, bar], [(1, 0)])
    assert visible[1] is bar and visible[0].area == 32 * 32 - 32 * 8
    assert not np.any(visible[0].within((0, 0, SIZE, SIZE)) & bar.within((0, 0, SIZE, SIZE)))
    assert partition([square, Crop(box(16, 48, 16, 48))], [(0, 1)])[1] is EMPTY  # a duplicate loses all


def test_a_nested_mask_is_in_front_and_its_container_keeps_its_whole_mask():
    table, fork = box(10, 54, 8, 56), box(20, 40, 30, 34)
    for method, order in (("pcnet", "pcnet"), ("convex-r", "convex"), ("raw", "area")):
        result = convert(*scene(table, fork), method, order)
        assert [e[:2] for e in result.edges] == [(2, 1)], method  # the fork occludes the table
        assert result.overlaps == {"nested": 1, "overlapping": 0, "sliver": 0}
        assert np.array_equal(full(result.visible[1]), table & ~fork)
        assert 2 not in result.visible  # the fork keeps its whole mask as visible
        assert np.all(full(result.amodal[1])[table]), method  # every drawn pixel stays amodal
        assert np.array_equal(full(result.amodal[2]), fork)  # not completed into its container


def test_an_outline_drawn_through_an_occluder_gives_the_order_from_the_overlap():
    square, bar = box(16, 48, 16, 48), box(8, 56, 28, 36)  # the square drawn through the bar
    result = convert(*scene(square, bar))
    assert [e[:2] for e in result.edges] == [(2, 1)]
    assert np.array_equal(full(result.visible[1]), square & ~bar)
    amodal = full(result.amodal[1])  # the drawn square, up to the known model's resizing at its edge
    assert np.all(amodal[square]) and np.count_nonzero(amodal & ~square) < 0.05 * square.sum()


def test_a_boundary_sliver_is_touching_and_the_visible_masks_partition_the_image():
    left, right = box(10, 50, 4, 32), box(10, 50, 31, 60)
    result = convert(*scene(left, right))
    assert result.overlaps == {"nested": 0, "overlapping": 0, "sliver": 1}
    assert result.pairs_tested == 1
    visible = [full(result.visible.get(k, encode_crop(Crop(m), SIZE, SIZE))) for k, m in ((1, left), (2, right))]
    assert not np.any(visible[0] & visible[1]) and np.array_equal(visible[0] | visible[1], left | right)
    for k, mask in ((1, left), (2, right)):
        assert np.all(full(result.amodal[k])[mask])


def test_the_output_names_the_visible_part_and_keeps_the_input_as_drawn():
    image, insts = scene(box(10, 54, 8, 56), box(20, 40, 30, 34))
    dataset = Dataset(None, "coco", [image], insts, [{"id": 1, "name": "thing"}])
    doc = augment(dataset, {1: convert(image, insts)}, {})
    table, fork = doc["annotations"]
    assert full(table["visible_mask"]).sum() == table["visible_area"] == 44 * 48 - 20 * 4
    assert table["segmentation"] is insts[0].source["segmentation"]  # amodal = as drawn: kept as is
    assert "drawn_segmentation" not in table and "visible_polygons" not in table
    assert table["occluded_by"] == [2] and fork["occluded_by"] == []
    # where the completion reaches past the drawn mask, the input segmentation is kept beside it
    grown = encode_crop(Crop(box(10, 60, 8, 56)), SIZE, SIZE)
    fields = annotation_fields(insts[0], grown, [2], "coco", False, visible=table["visible_mask"])
    assert fields["drawn_segmentation"] is insts[0].source["segmentation"]
    assert rle_area(fields["invisible_mask"]) == rle_area(grown) - table["visible_area"]


def test_a_partition_file_converts_as_before(tmp_path):
    modal, _ = make_dataset(tmp_path / "part", 6, 3, SynthOptions(width=96, height=96))
    out = convert_file(modal, tmp_path / "out.json", method="convex-r", order="convex", workers=1)
    doc = json.loads((tmp_path / "out.json").read_text())
    assert out["overlaps"] == doc["info"]["amodalize"]["overlaps"] == {"nested": 0, "overlapping": 0, "sliver": 0}
    source = {a["id"]: a for a in json.loads(modal.read_text())["annotations"]}
    for ann in doc["annotations"]:
        assert "drawn_segmentation" not in ann and ann["visible_mask"] == source[ann["id"]]["segmentation"]


@pytest.mark.parametrize("style", range(3))
def test_synth_outlines_draw_over_what_lies_in_front_only(style):
    shares = tuple(float(k == style) for k in range(3))
    rng = np.random.default_rng(5)
    amodals, visibles, occluders = make_scene(rng, SynthOptions(width=96, height=96, min_objects=6, max_objects=7))
    drawn = draw_outlines(np.random.default_rng(1), amodals, visibles, shares)
    front_of = [np.logical_or.reduce([np.zeros((96, 96), bool), *visibles[k + 1 :]]) for k in range(len(visibles))]
    for k, (visible, mask) in enumerate(zip(visibles, drawn)):
        assert np.all(mask[visible]) and not np.any(mask & ~visible & ~front_of[k])
        if style < 2:
            assert not np.any(mask & ~amodals[k] & ~visible)  # never outside the object
    if style == 1:  # drawn through everything in front
        for k in range(len(visibles)):
            assert np.array_equal(drawn[k], visibles[k] | (amodals[k] & front_of[k]))


def test_synth_outlines_keep_the_truth_and_make_masks_overlap(tmp_path):
    plain = make_dataset(tmp_path / "plain", 8, 4, SynthOptions(width=96, height=96))
    drawn = make_dataset(tmp_path / "drawn", 8, 4, SynthOptions(width=96, height=96, outlines=(0.3, 0.4, 0.3)))
    gt = [json.loads(p[1].read_text())["annotations"] for p in (plain, drawn)]
    assert gt[0] == gt[1]
    modal = [json.loads(p[0].read_text())["annotations"] for p in (plain, drawn)]
    changed = [b for a, b in zip(*modal) if a["segmentation"] != b["segmentation"]]
    assert changed and all(b["area"] > a["area"] for a, b in zip(*modal) if a["segmentation"] != b["segmentation"])
    overlaps = [
        find_overlaps([decode_crop(a["segmentation"]) for a in modal[1] if a["image_id"] == image])
        for image in {a["image_id"] for a in modal[1]}
    ]
    assert sum(map(len, overlaps)) >= len(changed) // 2
    with pytest.raises(ValueError, match="outline shares"):
        SynthOptions(outlines=(0.6, 0.6, 0.0))


def test_an_unsure_completion_can_leave_the_input_mask_standing():
    image, insts = scene(box(16, 48, 16, 48) & ~box(8, 56, 28, 36), box(8, 56, 28, 36))
    result = convert(image, insts)
    result.amodal_confidence = {1: 0.4, 2: 0.9}
    dataset = Dataset(None, "coco", [image], insts, [{"id": 1, "name": "thing"}])
    doc = augment(dataset, {1: result}, {}, min_amodal_confidence=0.5)
    square, bar = doc["annotations"]
    assert square["segmentation"] is insts[0].source["segmentation"] and square["amodal_confidence"] == 0.4
    assert square["completed_mask"] == result.amodal[1] and rle_area(result.amodal[1]) > square["area"]
    assert "completed_mask" not in bar and augment(dataset, {1: result}, {})["annotations"][0]["area"] > square["area"]


def test_convert_and_report_on_masks_drawn_as_coco_annotators_draw(tmp_path):
    invoke(["synth", tmp_path / "s", "--images", "6", "--size", "96", "--seed", "4", "--outlines", "0.4,0.4,0.2"])
    out = tmp_path / "out.json"
    said = invoke(["convert", tmp_path / "s" / "modal.json", out]).stderr
    doc = json.loads(out.read_text())
    counts = doc["info"]["amodalize"]["overlaps"]
    assert sum(counts.values()) > 0 and f"{counts['nested']} nested pairs" in said
    source = {a["id"]: a for a in json.loads((tmp_path / "s" / "modal.json").read_text())["annotations"]}
    split = [a for a in doc["annotations"] if a["visible_mask"] != source[a["id"]]["segmentation"]]
    assert split and all(a["visible_area"] < source[a["id"]]["area"] for a in split)
    for ann in doc["annotations"]:
        drawn, amodal = full(source[ann["id"]]["segmentation"]), full(ann["segmentation"])
        assert not np.any(drawn & ~amodal)
        if "drawn_segmentation" in ann:
            assert ann["drawn_segmentation"] == source[ann["id"]]["segmentation"]
    invoke(["report", out, tmp_path / "report", "--top", "1"])
    page = (tmp_path / "report" / "index.html").read_text()
    assert "pairs of masks drawn over each other" in page
    assert f"{counts['nested']:,} / {counts['overlapping']:,} / {counts['sliver']:,}" in page


def test_bad_outline_shares_are_one_line_errors(tmp_path):
    for bad in ("0.5,0.5", "0.6,0.6,0", "a,b,c"):
        result = invoke(["synth", tmp_path / "s", "--images", "1", "--outlines", bad], exit_code=2)
        assert "--outlines" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "s" / "modal.json").exists()
