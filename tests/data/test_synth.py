import json

import cv2
import numpy as np
import pytest

from amodalize.check.evaluate import evaluate
from amodalize.data.formats import read_dataset
from amodalize.data.masks import decode_crop, rle_area, rle_intersection_area
from amodalize.data.synth import SynthOptions, make_dataset, make_scene, polygonize, shapes_from
from tests.conftest import invoke


def test_same_seed_same_files_other_seed_differs(tmp_path):
    opts = SynthOptions(width=96, height=96)
    a = make_dataset(tmp_path / "a", 6, 3, opts)
    b = make_dataset(tmp_path / "b", 6, 3, opts)
    c = make_dataset(tmp_path / "c", 6, 4, opts)
    for x, y in zip(a, b):
        assert x.read_bytes() == y.read_bytes()
    assert a[1].read_bytes() != c[1].read_bytes()


def test_ground_truth_is_consistent(tmp_path):
    modal, gt = make_dataset(tmp_path, 8, 0, SynthOptions(width=128, height=128))
    m, g = read_dataset(modal), read_dataset(gt)
    assert m.format == "coco" and g.format == "coco_amodal"
    assert [i.modal for i in m.instances] == [i.modal for i in g.instances]
    occluded = 0
    for inst in g.instances:
        assert rle_intersection_area(inst.modal, inst.amodal) == rle_area(inst.modal)  # visible ⊆ amodal
        occluded += rle_area(inst.amodal) > rle_area(inst.modal)
    assert occluded > 0
    # The annotated occluders agree with the order the reference derives from the masks.
    metrics = evaluate(g, g, "annotated")
    assert metrics["order_pairs"] > 0 and metrics["order_acc"] == 1.0 and metrics["pooled_iou"] == 1.0
    assert evaluate(g, g, "masks")["order_acc"] == 1.0


def test_scene_layers_hide_what_lies_behind():
    rng = np.random.default_rng(0)
    amodals, visibles, occluders = make_scene(rng, SynthOptions(width=128, height=128, min_objects=6, max_objects=6))
    for k, visible in enumerate(visibles):
        for front in amodals[k + 1 :]:
            assert not np.any(visible & front)
        for j in occluders[k]:
            assert j > k


def test_gap_erodes_visible_masks(tmp_path):
    _, gt0 = make_dataset(tmp_path / "g0", 4, 1, SynthOptions(width=128, height=128))
    _, gt2 = make_dataset(tmp_path / "g2", 4, 1, SynthOptions(width=128, height=128, gap=2))
    a, b = read_dataset(gt0), read_dataset(gt2)
    visible0 = sum(rle_area(i.modal) for i in a.instances)
    visible2 = sum(rle_area(i.modal) for i in b.instances)
    assert visible2 < visible0
    for inst in b.instances:
        # the visible mask grown by 2 px stays inside the object: a 2 px band was eroded away
        grown = cv2.dilate(
            decode_crop(inst.modal).within((0, 0, 128, 128)).astype(np.uint8), np.ones((3, 3)), iterations=2
        )
        assert not np.any(grown.astype(bool) & ~decode_crop(inst.amodal).within((0, 0, 128, 128)))


def test_polygonize_keeps_outlines_within_tolerance_and_holes_open():
    ring = np.zeros((80, 80), np.uint8)
    cv2.circle(ring, (40, 40), 30, 1, -1)
    cv2.circle(ring, (40, 40), 12, 0, -1)
    ring = ring.astype(bool)
    drawn = polygonize(ring, 2.0)
    assert not drawn[40, 40] and drawn[40, 12]  # the hole stays a hole
    outline = ring & ~cv2.erode(ring.astype(np.uint8), np.ones((3, 3))).astype(bool)
    band = cv2.dilate(outline.astype(np.uint8), np.ones((3, 3)), iterations=3).astype(bool)
    assert not ((drawn ^ ring) & ~band).any()  # changes only within the tolerance of the outlines
    assert np.count_nonzero(drawn ^ ring) > 20  # straight edges cut the round outlines


def test_polygon_scenes_draw_visible_masks_from_polygons(tmp_path):
    plain = SynthOptions(width=128, height=128)
    drawn = SynthOptions(width=128, height=128, polygon=2.0)
    a = make_scene(np.random.default_rng(4), plain)[0]
    b = make_scene(np.random.default_rng(4), drawn)[0]
    assert len(a) == len(b) and any(not np.array_equal(x, y) for x, y in zip(a, b))
    assert all(np.count_nonzero(y ^ polygonize(y, 2.0)) < 0.05 * np.count_nonzero(y) for y in b)  # polygons
    _, gt = make_dataset(tmp_path, 4, 4, drawn)
    assert evaluate(read_dataset(gt), read_dataset(gt), "annotated")["order_acc"] == 1.0


def test_render_writes_images(tmp_path):
    make_dataset(tmp_path, 2, 0, SynthOptions(width=64, height=64, render=True))
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == ["000001.png", "000002.png"]


def test_scenes_of_given_shapes_layer_them_with_exact_truth(tmp_path):
    _, source = make_dataset(tmp_path / "src", 4, 2, SynthOptions(width=96, height=96))
    shapes = shapes_from([read_dataset(source)], 160, 160)
    amodal_areas = sorted(rle_area(i.amodal) for i in read_dataset(source).instances if rle_area(i.amodal) >= 16)
    assert len(shapes) == len(amodal_areas)  # amodal masks, not the visible ones, rescaled 96 -> 160 px
    assert sum(int(s.sum()) for s in shapes) > 2.5 * sum(amodal_areas)
    modal, gt = make_dataset(tmp_path / "out", 10, 0, SynthOptions(width=160, height=160), shapes)
    g = read_dataset(gt)
    occluded = sum(rle_area(i.amodal) > rle_area(i.modal) for i in g.instances)
    assert occluded > 0 and len(g.instances) >= 20
    metrics = evaluate(g, g, "annotated")
    assert metrics["order_pairs"] > 0 and metrics["order_acc"] == 1.0
    assert evaluate(g, g, "masks")["order_acc"] == 1.0
    again, _ = make_dataset(tmp_path / "again", 10, 0, SynthOptions(width=160, height=160), shapes)
    assert again.read_bytes() == modal.read_bytes()


def test_kinds_choose_the_shapes_drawn():
    def hull_share(mask: np.ndarray) -> float:
        points = cv2.findNonZero(mask.astype(np.uint8))
        hull = np.zeros(mask.shape, np.uint8)
        cv2.fillPoly(hull, [cv2.convexHull(points)], 1)
        return np.count_nonzero(mask) / np.count_nonzero(hull)

    shares = {}
    for kinds in (("ellipse", "convex", "rounded_box"), ("ring",)):
        opts = SynthOptions(width=128, height=128, min_objects=5, max_objects=5, kinds=kinds)
        amodals = [m for k in range(4) for m in make_scene(np.random.default_rng(k), opts)[0]]
        shares[kinds[0]] = [hull_share(m) for m in amodals if np.count_nonzero(m) > 200]
    assert shares["ellipse"] and min(shares["ellipse"]) > 0.93  # convex objects fill their hulls
    assert shares["ring"] and max(shares["ring"]) < 0.9  # rings do not
    with pytest.raises(ValueError, match="unknown shape kinds"):
        SynthOptions(kinds=("cube",))


def test_synth_cli_kinds(tmp_path):
    invoke(["synth", tmp_path / "ok", "--images", "2", "--size", "64", "--kinds", "ellipse,bar"])
    assert json.loads((tmp_path / "ok" / "gt.json").read_text())["info"]["amodalize"]["synth"]["kinds"] == [
        "ellipse",
        "bar",
    ]
    result = invoke(["synth", tmp_path / "bad", "--kinds", "ellipse,cube"], exit_code=2)
    assert "unknown shape kinds ['cube']" in result.stderr and not (tmp_path / "bad").exists()
