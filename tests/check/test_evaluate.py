import json

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from amodalize.check.evaluate import edge_reliability, evaluate, if_calibrated, iou_reliability
from amodalize.data.formats import read_dataset
from amodalize.data.writer import augment, write_json_atomic
from amodalize.errors import InputError
from amodalize.infer.convert import ConvertOptions
from amodalize.infer.hosts import convert_dataset
from tests.conftest import regions


def raw_masks(path):
    """Modal and amodal full-image masks straight from a COCOA per-image file."""
    doc = json.loads(path.read_text())
    size = next(r["visible_mask"]["size"] for r in doc["regions"] if "visible_mask" in r)
    out = []
    for r in doc["regions"]:
        amodal = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([r["segmentation"]], *size))).astype(bool)
        modal = mask_utils.decode(r["visible_mask"]).astype(bool) if "visible_mask" in r else amodal
        out.append((modal, amodal))
    return out


def converted(tmp_path, path, method, order="convex"):
    ds = read_dataset(path)
    out = tmp_path / f"{path.stem}-{method}.json"
    write_json_atomic(out, augment(ds, convert_dataset(ds, ConvertOptions(method, order)), {}))
    return read_dataset(out)


def test_raw_pooled_iou_matches_an_independent_count(tmp_path, cocoa_files):
    inter = union = 0
    for k in range(1, 6):
        for modal, amodal in raw_masks(cocoa_files / f"{k}.json"):
            inter += np.count_nonzero(modal & amodal)
            union += np.count_nonzero(modal | amodal)
    # evaluate per file, then pool the sums the metrics imply
    got_inter = got_union = 0.0
    for k in range(1, 6):
        gt = read_dataset(cocoa_files / f"{k}.json")
        m = evaluate(converted(tmp_path, cocoa_files / f"{k}.json", "raw"), gt)
        areas = [(i.modal, i.amodal) for i in gt.instances]
        target = sum(mask_utils.area(a) for _, a in areas)
        got_inter += m["pacc"] * target
        got_union += m["pacc"] * target / m["pooled_iou"]
    assert got_inter == pytest.approx(inter, abs=0.5)
    assert got_inter / got_union == pytest.approx(inter / union, rel=1e-9)
    assert 0.5 < inter / union < 0.95


def test_gt_order_from_masks_matches_an_independent_count(cocoa_files):
    masks = raw_masks(cocoa_files / "3.json")
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    occluded_pairs = 0
    for i in range(len(masks)):
        grown = cv2.dilate(masks[i][0].astype(np.uint8), cross).astype(bool)
        for j in range(i + 1, len(masks)):
            if np.any(grown & masks[j][0]):
                occluded_pairs += bool(np.any(masks[i][0] & masks[j][1]) or np.any(masks[j][0] & masks[i][1]))
    gt = read_dataset(cocoa_files / "3.json")
    m = evaluate(gt, gt)
    assert m["order_pairs"] == occluded_pairs and m["pooled_iou"] == 1.0
    assert m["order_acc"] == 0.0  # the GT file predicts no order: every occluded pair counts as wrong


def test_convex_r_beats_raw_and_order_is_scored(tmp_path, cocoa_files):
    totals = {"raw": [0, 0, 0, 0], "convex-r": [0, 0, 0, 0]}  # correct, pairs, intersection, union
    for k in range(1, 6):
        gt = read_dataset(cocoa_files / f"{k}.json")
        for method, order in (("raw", "area"), ("convex-r", "convex")):
            m = evaluate(converted(tmp_path, cocoa_files / f"{k}.json", method, order), gt)
            for n, key in enumerate(("order_correct", "order_pairs", "sum_intersection", "sum_union")):
                totals[method][n] += m[key]
            assert (
                sum(b["instances"] for b in m["by_occlusion"]) == m["instances"] == regions(cocoa_files / f"{k}.json")
            )
    (raw_ok, pairs, raw_i, raw_u), (cvx_ok, cvx_pairs, cvx_i, cvx_u) = totals["raw"], totals["convex-r"]
    assert cvx_i / cvx_u > raw_i / raw_u
    assert pairs == cvx_pairs > 0 and 0 < raw_ok < pairs and 0 < cvx_ok < pairs


def test_mismatched_ids_are_an_error(tmp_path, cocoa_files):
    pred = converted(tmp_path, cocoa_files / "2.json", "raw")
    with pytest.raises(InputError, match="annotation ids do not match"):
        evaluate(pred, read_dataset(cocoa_files / "3.json"))


def test_modal_only_gt_is_an_error(tmp_path, cocoa_files):
    pred = converted(tmp_path, cocoa_files / "2.json", "raw")
    plain = tmp_path / "plain.json"
    doc = json.loads((tmp_path / "2-raw.json").read_text())
    for a in doc["annotations"]:
        a["segmentation"] = a.pop("visible_mask")
    plain.write_text(json.dumps(doc))
    with pytest.raises(InputError, match="no amodal masks"):
        evaluate(pred, read_dataset(plain, "coco"))


def test_reliability_tables_and_the_wrong_edges_among_the_least_confident():
    confidence = [0.55] * 10 + [0.95] * 10
    right = [False] * 5 + [True] * 15
    out = edge_reliability(list(zip(confidence, right)))
    assert out["count"] == 20 and out["wrong"] == 5
    assert [(row["count"], row["observed"]) for row in out["table"]] == [(10, 0.5), (10, 1.0)]
    assert out["ece"] == pytest.approx((10 * 0.05 + 10 * 0.05) / 20)
    assert out["least_confident"] == 2 and out["wrong_in_least_confident"] == 2  # ties keep file order
    assert out["if_calibrated"] == if_calibrated(np.array(confidence), np.array([0, 1]))
    iou = iou_reliability([(0.9, 0.8), (0.2, 0.2)])
    assert iou["mean_abs_error"] == pytest.approx(0.05) and iou["ece"] == pytest.approx(0.05)


def test_if_calibrated_gives_what_exact_confidences_would_score():
    flat = if_calibrated(np.full(400, 0.75), np.arange(40))
    # ECE of one bin of exactly calibrated edges is |mean of 400 Bernoulli(0.75) - 0.75|, whose
    # median is 0.6745 of its standard deviation
    assert flat["ece_median"] == pytest.approx(0.6745 * np.sqrt(0.75 * 0.25 / 400), abs=0.002)
    assert flat["ece_p90"] > flat["ece_median"]
    assert flat["wrong_share_in_least_confident"] == pytest.approx(0.1, abs=0.03)  # no sharper than chance
    sharp = np.array([0.5] * 10 + [1.0] * 90)
    assert if_calibrated(sharp, np.arange(10))["wrong_share_in_least_confident"] == 1.0  # only the 0.5s err
    sure = if_calibrated(np.ones(50), np.arange(5))
    assert sure == {"ece_median": 0.0, "ece_p90": 0.0, "wrong_share_in_least_confident": None}
    assert if_calibrated(np.full(400, 0.75), np.arange(40)) == flat  # seeded


def test_evaluate_scores_the_confidences_a_prediction_carries(tmp_path):
    from amodalize.data.synth import SynthOptions, make_dataset

    _, gt_path = make_dataset(tmp_path, 6, 5, SynthOptions(width=96, height=96))
    doc = json.loads(gt_path.read_text())
    for k, pair in enumerate(doc["occlusion_pairs"]):
        pair["confidence"] = 0.9 if k % 2 else 0.7
    for ann in doc["annotations"]:
        ann["amodal_confidence"] = 0.8
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps(doc))
    gt = read_dataset(gt_path)
    m = evaluate(read_dataset(pred, "coco_amodal"), gt, "annotated")
    edges = m["edge_confidence"]
    assert edges["count"] == m["order_pairs"] == len(doc["occlusion_pairs"]) and edges["wrong"] == 0
    assert edges["ece"] == pytest.approx(1 - np.mean([p["confidence"] for p in doc["occlusion_pairs"]]), abs=1e-4)
    assert m["amodal_confidence"]["count"] == m["instances"]
    assert m["amodal_confidence"]["mean_abs_error"] == pytest.approx(0.2)  # every IoU is 1
    assert evaluate(gt, gt, "annotated")["edge_confidence"] is None


def test_hidden_share_buckets_with_missing_and_extra_area():
    """A 10x10 square 60% hidden behind a bar, completed to half its hidden part, lands in > 50%
    with IoU 0.7 and 30% of its area missing; one 20% hidden, completed with 4 pixels too many,
    lands in < 25% with 4% extra."""
    from amodalize.data.masks import Crop, encode_crop
    from amodalize.data.records import Dataset, ImageRecord, Instance

    def rle(mask):
        return encode_crop(Crop(mask), 40, 40)

    def box(y0, y1, x0, x1):
        m = np.zeros((40, 40), bool)
        m[y0:y1, x0:x1] = True
        return m

    square, bar = box(0, 10, 0, 10), box(0, 12, 4, 40)  # the bar hides columns 4-9 of the square: 60%
    small, pole = box(20, 30, 0, 10), box(18, 40, 8, 10)  # the pole hides columns 8-9 of the other: 20%
    truth = [(square & ~bar, square), (bar, bar), (small & ~pole, small), (pole, pole)]
    predicted = [box(0, 10, 0, 7), bar, small | box(30, 32, 0, 2), pole]
    image = ImageRecord(1, 40, 40, None, {"id": 1, "width": 40, "height": 40})

    def dataset(amodals):
        insts = [
            Instance(k + 1, 1, 1, rle(modal), [0, 0, 1, 1], amodal=rle(amodal), source={"id": k + 1})
            for k, ((modal, _), amodal) in enumerate(zip(truth, amodals))
        ]
        return Dataset(None, "coco_amodal", [image], insts, [])

    m = evaluate(dataset(predicted), dataset([a for _, a in truth]))
    low, middle, high = m["by_hidden_share"]
    assert (high["bin"], high["instances"], middle["instances"], low["instances"]) == ("> 50%", 1, 0, 1)
    assert high["miou"] == pytest.approx(0.7) and high["missing"] == pytest.approx(0.3) and high["extra"] == 0
    assert low["miou"] == pytest.approx(100 / 104) and low["missing"] == 0 and low["extra"] == pytest.approx(0.04)
    assert middle["miou"] is None and middle["missing"] is None
