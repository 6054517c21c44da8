"""Calibration without ground truth, and how convert decides its settings from it."""

import json

import numpy as np
import pytest
import torch

from amodalize.config import DataConfig
from amodalize.data.bank import build_bank
from amodalize.data.formats import read_dataset
from amodalize.data.masks import dilate_square
from amodalize.data.synth import SynthOptions, make_dataset
from amodalize.infer.batcher import Completer
from amodalize.infer.calibrate import (
    AMODAL_GRID,
    ORDER_GRID,
    build_scenes,
    calibrate,
    dilation_candidates,
    layered_scenes,
)
from amodalize.infer.fusion import PAIR_FEATURES
from amodalize.infer.settings import REFERENCE_SETTINGS
from amodalize.models.pcnet_m import load_pcnet_m
from amodalize.train.loop import train
from tests.conftest import invoke
from tests.infer.test_pcnet import HullNet, tiny_model
from tests.models.test_unet import to_reference
from tests.train.test_loop import tiny


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    modal, _ = make_dataset(tmp_path_factory.mktemp("synth"), 12, 3, SynthOptions(width=96, height=96))
    return build_bank([read_dataset(modal)], workers=1)


def test_scenes_hide_part_of_the_target_behind_the_eraser_with_the_gap(bank):
    everyone = np.arange(len(bank))
    for gap in (0, 4):
        scenes = build_scenes(bank, everyone, everyone, DataConfig(input_size=32, gap=gap), gap, 0, 20)
        assert len(scenes) == 20
        for image, (a, b), full in scenes:
            visible, front = (read_mask(i, image) for i in (a, b))
            assert not (visible & ~full).any() and (full & ~visible).any()  # A is partly hidden
            assert not (visible & front).any()
            if gap:  # nothing of the front mask within the gap of A's visible part
                assert not (dilate_square(front, 1) & visible).any()


def read_mask(inst, image):
    from amodalize.data.masks import decode_crop

    return decode_crop(inst.modal).within((0, 0, image.width, image.height))


def test_a_model_that_completes_hulls_is_calibrated_to_order_well(bank):
    everyone = np.arange(len(bank))
    completer = Completer(HullNet(), 32, device=torch.device("cpu"), batch_size=16)
    cal = calibrate(bank, everyone, everyone, DataConfig(input_size=32, gap=0), 0, completer, samples=40)
    again = calibrate(bank, everyone, everyone, DataConfig(input_size=32, gap=0), 0, completer, samples=40)
    assert cal == again  # a function of the seed
    assert cal.samples == 40 and cal.order_acc > 0.7 and 0.7 < cal.iou <= 1
    assert cal.order_th in ORDER_GRID and cal.amodal_th in AMODAL_GRID and cal.eraser_dilate in dilation_candidates(0)


def test_dilation_candidates_bracket_the_gap():
    assert dilation_candidates(0) == [0, 1] and dilation_candidates(4) == [0, 2, 4, 6, 8]


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """A tiny PCNet-M trained and calibrated on clean synth scenes (gap 0)."""
    tmp = tmp_path_factory.mktemp("run")
    modal, _ = make_dataset(tmp / "data", 8, 0, SynthOptions(width=96, height=96))
    metrics = train(tiny(6, "run.calibration_samples=16"), [modal], tmp / "run", device="cpu")
    return tmp / "run" / "checkpoint.pt", metrics


def test_training_ends_with_a_calibration_in_the_checkpoint(calibrated):
    path, metrics = calibrated
    loaded = load_pcnet_m(path)
    assert loaded.calibration == metrics["calibration"] and loaded.calibration["gap"] == 0
    assert loaded.calibration["samples"] == 16 and metrics["gap"] == 0
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["gap"]["measured"]["gap"] == 0
    records = [json.loads(line) for line in (path.parent / "log.jsonl").read_text().splitlines()]
    assert [r["calibration"] for r in records if "calibration" in r] == [metrics["calibration"]]


def test_convert_uses_the_calibration_and_flags_override_it(tmp_path, calibrated):
    path, metrics = calibrated
    cal = metrics["calibration"]
    modal, _ = make_dataset(tmp_path / "s", 3, 9, SynthOptions(width=96, height=96))
    invoke(["convert", modal, tmp_path / "a.json", "--checkpoint", path])
    info = json.loads((tmp_path / "a.json").read_text())["info"]["amodalize"]
    assert info["decided"]["source"] == "the checkpoint's calibration" and info["decided"]["gap"]["gap"] == 0
    assert {k: info["settings"][k] for k in ("order_th", "amodal_th", "eraser_dilate")} == {
        k: cal[k] for k in ("order_th", "amodal_th", "eraser_dilate")
    }
    assert info["settings"]["max_aspect"] == 2.5  # narrowed completion crops by default
    assert info["settings"]["recentre_th"] == 0  # recentred on the completion by default
    assert info["settings"]["grow_to_occluders"] == 0.5
    flags = [
        "--order-th",
        "0.77",
        "--eraser-dilate",
        "3",
        "--max-aspect",
        "0",
        "--recentre-th",
        "0.1",
        "--grow-to-occluders",
        "0",
    ]
    invoke(["convert", modal, tmp_path / "b.json", "--checkpoint", path, *flags])
    settings = json.loads((tmp_path / "b.json").read_text())["info"]["amodalize"]["settings"]
    assert settings["order_th"] == 0.77 and settings["eraser_dilate"] == 3 and settings["amodal_th"] == cal["amodal_th"]
    assert settings["max_aspect"] == 0 and settings["recentre_th"] == 0.1
    assert settings["grow_to_occluders"] == 0
    assert settings["gap"] == 0  # an explicit dilation measures no gap


def test_the_fusion_round_trips_in_the_checkpoint_and_flags_override_it(tmp_path, calibrated):
    path, metrics = calibrated
    cal = load_pcnet_m(path).calibration
    assert cal["fusion"]["features"] == list(PAIR_FEATURES) and len(cal["fusion"]["weights"]) == len(PAIR_FEATURES)
    assert cal["fusion"]["pairs"] > 0 and cal["iou_model"]["instances"] > 0 and cal == metrics["calibration"]
    modal, _ = make_dataset(tmp_path / "s", 3, 9, SynthOptions(width=96, height=96))
    invoke(["convert", modal, tmp_path / "a.json", "--checkpoint", path, "--review", tmp_path / "review.json"])
    doc = json.loads((tmp_path / "a.json").read_text())
    info = doc["info"]["amodalize"]
    assert info["order_method"] == "fused" and info["checkpoint"]["tta"] == "flip"
    assert info["decided"]["fusion_source"] == "the calibration's"
    assert info["settings"]["fusion"] == cal["fusion"]["weights"]
    assert doc["occlusion_pairs"] and all(0.5 <= p["confidence"] <= 1 for p in doc["occlusion_pairs"])
    assert all(0 <= a["amodal_confidence"] <= 1 for a in doc["annotations"])
    listed = json.loads((tmp_path / "review.json").read_text())
    assert listed["edges_total"] == len(doc["occlusion_pairs"]) and listed["edges"]
    lowest = min(p["confidence"] for p in doc["occlusion_pairs"])
    assert listed["edges"][0]["confidence"] == lowest
    for flag in ("pcnet", "convex"):
        invoke(["convert", modal, tmp_path / f"{flag}.json", "--checkpoint", path, "--order", flag])
        other = json.loads((tmp_path / f"{flag}.json").read_text())
        assert other["info"]["amodalize"]["order_method"] == flag
        assert not any("confidence" in p for p in other["occlusion_pairs"])
        assert not any("amodal_confidence" in a for a in other["annotations"])


def test_a_fusion_of_other_features_is_fitted_again_on_the_input(tmp_path, calibrated):
    path, _ = calibrated
    ckpt = torch.load(path, weights_only=True)
    ckpt["calibration"]["fusion"]["features"] = ckpt["calibration"]["fusion"]["features"][:4]  # an earlier version's
    old = tmp_path / "old.pt"
    torch.save(ckpt, old)
    modal, _ = make_dataset(tmp_path / "s", 3, 9, SynthOptions(width=96, height=96))
    invoke(["convert", modal, tmp_path / "o.json", "--checkpoint", old])
    info = json.loads((tmp_path / "o.json").read_text())["info"]["amodalize"]
    assert info["decided"]["source"] == "the checkpoint's calibration"  # its thresholds still serve
    assert info["decided"]["fusion_source"] == "fitted on scenes of the input's own shapes"
    assert info["decided"]["fusion"]["features"] == list(PAIR_FEATURES)
    assert info["settings"]["fusion"] == info["decided"]["fusion"]["weights"]


def test_layered_scenes_know_their_order_and_keep_the_gap(bank):
    for gap in (0, 3):
        scenes = layered_scenes(bank, gap, 0, 12)
        assert len(scenes) >= 8
        for image, instances, amodals, occluders in scenes:
            visible = [read_mask(inst, image) for inst in instances]
            for k, (mask, full) in enumerate(zip(visible, amodals)):
                assert not (mask & ~full).any()
                for j in occluders[k]:
                    assert j > k and (amodals[j] & full).any()  # a direct occluder lies over it
                    if gap:  # the occluder's visible mask stays off this one's by the gap's cut
                        assert not (dilate_square(visible[j], 1) & mask).any()
        assert any(occluders for _, _, _, occluders in scenes)


def test_input_with_another_gap_is_calibrated_on_itself(tmp_path, calibrated):
    path, _ = calibrated
    modal, _ = make_dataset(tmp_path / "s", 6, 9, SynthOptions(width=96, height=96, gap=1))
    result = invoke(["convert", modal, tmp_path / "o.json", "--checkpoint", path])
    info = json.loads((tmp_path / "o.json").read_text())["info"]["amodalize"]
    assert info["decided"]["gap"]["gap"] == 2 and info["settings"]["gap"] == 2
    assert (
        info["decided"]["source"].startswith("a calibration on the input")
        and info["decided"]["calibration"]["gap"] == 2
    )
    assert info["settings"]["eraser_dilate"] in dilation_candidates(2)
    assert "neighbouring masks 2 px" in result.stderr


def test_a_calibration_stored_at_the_input_gap_serves_and_the_fusion_is_fitted_on_the_input(tmp_path, calibrated):
    path, _ = calibrated
    ckpt = torch.load(path, weights_only=True)
    at_gap_2 = {**ckpt["calibration"], "gap": 2, "order_th": 0.45, "amodal_th": 0.25, "eraser_dilate": 3}
    for key in ("fusion", "iou_model"):
        at_gap_2.pop(key)
    ckpt["gap_calibrations"] = [at_gap_2]
    stored = tmp_path / "stored.pt"
    torch.save(ckpt, stored)
    assert load_pcnet_m(stored).gap_calibrations == (at_gap_2,)
    modal, _ = make_dataset(tmp_path / "s", 6, 9, SynthOptions(width=96, height=96, gap=1))
    invoke(["convert", modal, tmp_path / "o.json", "--checkpoint", stored])
    info = json.loads((tmp_path / "o.json").read_text())["info"]["amodalize"]
    assert info["decided"]["source"] == "the checkpoint's calibration at gap 2 px"
    assert {k: info["settings"][k] for k in ("order_th", "amodal_th", "eraser_dilate")} == {
        "order_th": 0.45,
        "amodal_th": 0.25,
        "eraser_dilate": 3,
    }
    assert info["decided"]["fusion_source"] == "fitted on scenes of the input's own shapes"
    assert info["checkpoint"]["gap_calibrations"] == [at_gap_2]


def test_without_fusion_calibration_stops_at_the_thresholds(bank):
    completer = Completer(HullNet(), 32, device=torch.device("cpu"), batch_size=16)
    everyone = np.arange(len(bank))
    found = calibrate(
        bank, everyone, everyone, DataConfig(input_size=32, gap=0), 0, completer, samples=12, fusion=False
    )
    assert found.fusion is None and found.iou_model is None and found.order_th in ORDER_GRID


def test_reference_checkpoint_keeps_the_reference_thresholds_and_reference_flag_fixes_all(tmp_path):
    state = {to_reference(k): v for k, v in tiny_unet_state().items()}
    ckpt = tmp_path / "COCOA_pcnet_m.pth.tar"
    torch.save({"state_dict": state}, ckpt)
    modal, _ = make_dataset(tmp_path / "s", 2, 1, SynthOptions(width=64, height=64, gap=1))
    invoke(["convert", modal, tmp_path / "o.json", "--checkpoint", ckpt, "--order", "pcnet"])
    info = json.loads((tmp_path / "o.json").read_text())["info"]["amodalize"]
    assert (info["settings"]["order_th"], info["settings"]["amodal_th"]) == (0.1, 0.2)
    assert info["settings"]["eraser_dilate"] == info["settings"]["gap"] == 2  # the gap is bridged
    invoke(["convert", modal, tmp_path / "r.json", "--checkpoint", ckpt, "--reference"])
    info = json.loads((tmp_path / "r.json").read_text())["info"]["amodalize"]
    assert {k: info["settings"][k] for k in REFERENCE_SETTINGS} == REFERENCE_SETTINGS
    assert info["settings"]["gap"] == 0 and info["decided"]["source"] == "reference protocol"


def tiny_unet_state():
    from amodalize.models.unet import UNet

    torch.manual_seed(0)
    return UNet(2, 2, widen=2).state_dict()


def test_uncalibrated_amodalize_checkpoint_bridges_the_measured_gap(tmp_path):
    ckpt = tiny_model(tmp_path / "m.pt")
    modal, _ = make_dataset(tmp_path / "s", 3, 1, SynthOptions(width=96, height=96, gap=1))
    invoke(["convert", modal, tmp_path / "o.json", "--checkpoint", ckpt])
    info = json.loads((tmp_path / "o.json").read_text())["info"]["amodalize"]
    assert info["decided"]["source"].startswith("reference thresholds")
    assert (info["settings"]["order_th"], info["settings"]["amodal_th"], info["settings"]["eraser_dilate"]) == (
        0.1,
        0.2,
        2,
    )
