"""Ordering fusion, IoU estimates, test-time mirroring and the review of the least-confident output."""

import hashlib
import json

import numpy as np
import pytest
import torch

from amodalize.check.review import review
from amodalize.data.formats import read_dataset
from amodalize.data.synth import SynthOptions, make_dataset
from amodalize.infer.batcher import Completer
from amodalize.infer.convert import ConvertOptions
from amodalize.infer.fusion import (
    IOU_FEATURES,
    PAIR_FEATURES,
    IoUModel,
    OrderFusion,
    decide,
    fit_iou,
    fit_logistic,
    fit_order,
    pair_features,
)
from amodalize.infer.hosts import convert_dataset
from amodalize.infer.settings import REFERENCE_SETTINGS
from tests.infer.test_pcnet import HullNet, square_and_bar


def test_logistic_fit_recovers_the_weights_that_made_the_labels():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 3))
    truth = np.array([2.0, -1.0, 0.5])
    y = (rng.random(4000) < 1 / (1 + np.exp(-(x @ truth)))).astype(float)
    assert np.allclose(fit_logistic(x, y), truth, atol=0.25)


def test_fused_probability_is_antisymmetric_and_follows_the_stronger_cue():
    rng = np.random.default_rng(1)
    n = 400
    front = rng.random(n) < 0.5
    sign = np.where(front, 1.0, -1.0)
    features = np.zeros((n, len(PAIR_FEATURES)))
    features[:, 0] = np.where(rng.random(n) < 0.95, sign, -sign)  # a cue right 95% of the time ...
    features[:, 4] = np.where(rng.random(n) < 0.6, sign, -sign)  # ... and one right 60% of the time
    fusion = fit_order(features, front)
    assert fusion.weights[0] > 2 * abs(fusion.weights[4]) > 0
    assert fusion.pcnet_accuracy > 0.9 and abs(fusion.convex_accuracy - 0.6) < 0.1
    p = fusion.probability(features)
    assert np.allclose(fusion.probability(-features), 1 - p)
    assert OrderFusion.from_json(fusion.to_json()) == fusion


def test_features_change_sign_when_the_pair_is_swapped():
    occ = np.array([[0, 5.0], [30.0, 0]])  # 1 grows more behind 0: 0 is in front
    forward = pair_features([occ, occ, occ, occ], [100, 100], [(0, 1)])
    backward = pair_features([occ.T, occ.T, occ.T, occ.T], [100, 100], [(0, 1)])
    assert forward.shape == (1, len(PAIR_FEATURES)) and (forward > 0).all()
    assert np.allclose(forward, -backward)


def test_decide_directs_related_pairs_by_the_fused_probability():
    fusion = OrderFusion((1.0,) + (0.0,) * (len(PAIR_FEATURES) - 1))
    features = np.zeros((3, len(PAIR_FEATURES)))
    features[:, 0] = [2.0, -1.0, 3.0]
    order, confidence = decide(features, [(0, 1), (1, 2), (0, 2)], np.array([True, True, False]), fusion, 3)
    assert order[0, 1] == 1 and order[1, 0] == -1  # 0 in front of 1
    assert order[1, 2] == -1 and order[2, 1] == 1  # 2 in front of 1
    assert order[0, 2] == order[2, 0] == 0  # not related: no order
    assert np.isclose(confidence[0, 1], 1 / (1 + np.exp(-2))) and confidence[0, 1] == confidence[1, 0]
    assert 0.5 < confidence[1, 2] < confidence[0, 1]


def test_iou_model_fits_a_logistic_truth_and_round_trips():
    rng = np.random.default_rng(2)
    features = np.column_stack([np.ones(300), rng.random((300, len(IOU_FEATURES) - 1))])
    truth = 1 / (1 + np.exp(-(features @ np.array([3.0, -2.0, -1.5, -0.5, 0.0]))))
    model = fit_iou(features, truth)
    assert model.mean_abs_error < 0.01 and model.instances == 300
    assert IoUModel.from_json(model.to_json()) == model
    with pytest.raises(ValueError, match="link"):  # an earlier version's linear model is refitted, not misread
        IoUModel.from_json({k: v for k, v in model.to_json().items() if k != "link"})


def test_iou_estimates_stay_inside_zero_one_and_keep_the_ranking():
    """A linear fit clipped to [0, 1] put many completions at exactly 0; the estimate never reaches
    0 or 1, and it orders objects as the features' score does."""
    rng = np.random.default_rng(3)
    features = np.column_stack([np.ones(200), rng.random((200, len(IOU_FEATURES) - 1)) * 40 - 20])
    model = IoUModel((0.5, -1.0, -2.0, 1.0, 0.0))
    estimate = model.estimate(features)
    assert (estimate > 0).all() and (estimate < 1).all()
    assert (np.round(estimate, 4) > 0).all()
    score = features @ np.array(model.weights)
    order = np.argsort(score)
    assert (np.diff(estimate[order]) >= 0).all()


def test_mirrored_queries_average_both_views_in_one_forward():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 2, 3, padding=1))
    rng = np.random.default_rng(3)
    modal = (rng.random((5, 16, 16)) < 0.5).astype(np.uint8)
    eraser = (rng.random((5, 16, 16)) < 0.3).astype(np.uint8)
    category = np.ones(5, np.float32)
    single = Completer(net, 16, device=torch.device("cpu"), batch_size=8)
    flip = Completer(net, 16, device=torch.device("cpu"), batch_size=8, tta="flip")
    mirrored = single(modal[:, :, ::-1].copy(), eraser[:, :, ::-1].copy(), category)[:, :, ::-1]
    assert np.allclose(flip(modal, eraser, category), (single(modal, eraser, category) + mirrored) / 2, atol=1e-6)
    assert flip.forwards == 1 and flip.queries == 5


def test_fused_conversion_gives_calibrated_fields_and_no_model_gives_none():
    dataset, _ = square_and_bar()
    completer = Completer(HullNet(), 64, device=torch.device("cpu"), batch_size=4)
    weights = (1.0,) + (0.0,) * (len(PAIR_FEATURES) - 1)
    iou = (2.0, -3.0, 0.0, 0.0, 0.0)  # logit of the IoU
    opts = ConvertOptions("pcnet", "fused", fusion=weights, iou_model=iou)
    result = convert_dataset(dataset, opts, completer=completer)[1]
    ((front, back, score, confidence),) = result.edges
    assert (front, back) == (2, 1) and 0.5 < confidence <= 1  # the bar occludes the square
    assert set(result.amodal_confidence) == {1, 2}
    top = round(1 / (1 + np.exp(-2.0)), 4)
    assert result.amodal_confidence[2] == top  # the bar, unoccluded, keeps its visible mask
    assert result.amodal_confidence[1] < top  # the square gained hidden pixels
    plain = convert_dataset(dataset, ConvertOptions("pcnet", "pcnet"), completer=completer)[1]
    assert [e[:2] for e in plain.edges] == [(2, 1)] and plain.edges[0][3] is None and not plain.amodal_confidence
    assert plain.amodal == result.amodal


def test_review_lists_the_least_confident_first():
    doc = {
        "images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}],
        "annotations": [
            {"id": k, "image_id": 1 + k % 2, "amodal_confidence": 0.5 + k / 40, "occluded_by": [99]} for k in range(20)
        ]
        + [{"id": 50, "image_id": 1, "amodal_confidence": 0.1, "occluded_by": []}],  # unoccluded: nothing to check
        "occlusion_pairs": [
            {"image_id": 1 + k % 2, "occluder_id": k, "occludee_id": k + 1, "score": 0.5, "confidence": 1 - k / 40}
            for k in range(20)
        ],
    }
    out = review(doc, share=0.1)
    assert [e["confidence"] for e in out["edges"]] == [1 - 19 / 40, 1 - 18 / 40]
    assert [i["id"] for i in out["instances"]] == [0, 1]
    assert out["images"][0]["image_id"] == 1 and out["edges_total"] == 20
    assert {e["image_id"] for e in out["images"]} == {1, 2}


# Digests of the conversion made with commit 196b5cc (before test-time augmentation and fusion) on
# the same input with the same known-answer model: calibrated-style settings, and the reference's.
# The first has since been remade with every visible pixel kept (196b5cc dropped those its
# completion's box missed, on 9 of these 23 objects; checked: the new masks are the old ones
# united with the visible masks, the edges the same).
BEFORE_FUSION = {
    "defaults": "4208b41a514f7285180262de7d0c7102361be22c2baae2173539801b34717e7d",
    "reference": "b664e9200341e3a54410e13dc651fafbbf65f55645fb81a376284da009d67763",
}


@pytest.mark.parametrize("settings", ["defaults", "reference"])
def test_single_view_dual_completion_reproduces_the_output_before_fusion(tmp_path, settings):
    """One view and dual completion alone, completions pasted as then (thresholded at the
    network's size, on the visible box's crop only), give exactly what conversion gave before
    test-time augmentation and fusion existed, with the reference protocol's settings too."""
    modal, _ = make_dataset(tmp_path, 6, 11, SynthOptions(width=128, height=128))
    if settings == "reference":
        opts = ConvertOptions("pcnet", "pcnet", **REFERENCE_SETTINGS)
        completer = Completer(HullNet(), 32, device=torch.device("cpu"), batch_size=1, tta="none")
    else:
        opts = ConvertOptions(
            "pcnet", "pcnet", order_th=0.3, amodal_th=0.3, paste_resize="binary", recentre=0, grow_to_occluders=0
        )
        completer = Completer(HullNet(), 32, device=torch.device("cpu"), batch_size=8, tta="none")
    results = convert_dataset(read_dataset(modal), opts, completer=completer)
    doc = [
        [r.image_id, sorted((k, v["counts"]) for k, v in r.amodal.items()), [list(e[:3]) for e in r.edges]]
        for r in results.values()
    ]
    assert sum(len(r.edges) for r in results.values()) == 10
    assert hashlib.sha256(json.dumps(doc).encode()).hexdigest() == BEFORE_FUSION[settings]
