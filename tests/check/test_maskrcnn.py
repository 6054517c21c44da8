"""The Mask R-CNN hook on tiny rendered synth scenes (CPU, a few iterations)."""

import json
import re
import sys

import numpy as np
import pytest
import torch

from amodalize.check.amodal_ap import coco_ap, matched_detections, occluded_ids, score
from amodalize.check.maskrcnn import (
    MaskRCNNConfig,
    bar_chart,
    detection_batches,
    evaluate_run,
    paired_differences,
    predict_on_boxes,
    summarize_seeds,
    train,
)
from amodalize.data.formats import read_dataset
from amodalize.data.masks import Crop, encode_crop, rle_area, rle_bbox
from amodalize.data.records import Dataset, ImageRecord, Instance
from amodalize.data.synth import SynthOptions, make_dataset
from tests.conftest import invoke, torchrun

pytestmark = pytest.mark.slow  # trains Mask R-CNN

# learned_floor 0: a few steps cannot learn to detect (test_a_start_that_cannot_learn_is_refused checks the floor)
TINY = dict(arch="mnv3-fpn", batch_size=2, lr=0.01, warmup=3, threads=1, checkpoint_every=2, learned_floor=0.0)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("mrcnn")
    opts = SynthOptions(width=64, height=64, min_objects=2, max_objects=3, render=True)
    make_dataset(root / "train", 4, 1, opts)
    make_dataset(root / "test", 2, 2, opts)
    return root


def test_loss_decreases_and_ap_is_a_fraction(tmp_path, scenes):
    train(MaskRCNNConfig(iters=16, **TINY), scenes / "train" / "gt.json", scenes / "train" / "images", tmp_path / "run")
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert len(losses) == 16 and sum(losses[-4:]) < sum(losses[:4])
    metrics = evaluate_run(tmp_path / "run", scenes / "test" / "gt.json", scenes / "test" / "images")
    assert 0.0 <= metrics["AP"] <= 1.0 and 0.0 <= metrics["box_AP"] <= 1.0
    assert metrics["occluded_objects"] > 0 and 0.0 <= metrics["occluded_AP"] <= 1.0
    assert 0.0 <= metrics["occluded_miou"] <= 1.0 and 0.0 < metrics["occluded_boxed_miou"] <= 1.0


def test_interrupt_then_resume(tmp_path, scenes):
    def stop_at_3(record):
        if record["step"] == 3:
            raise KeyboardInterrupt

    cfg = MaskRCNNConfig(iters=5, **TINY)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, scenes / "train" / "gt.json", scenes / "train" / "images", tmp_path / "run", on_step=stop_at_3)
    last = train(cfg, scenes / "train" / "gt.json", scenes / "train" / "images", tmp_path / "run", resume=True)
    assert last["step"] == 5
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]


def test_processes_share_each_batch_between_them():
    cfg = MaskRCNNConfig(iters=7, batch_size=4, seed=3)
    images = list(range(10))  # stands in for a DetectionSet: indexable, with a length
    alone = list(detection_batches(images, 2, cfg))
    shares = [list(detection_batches(images, 2, cfg, rank, 2)) for rank in (0, 1)]
    assert len(alone) == 5 and all(len(b) == 4 for b in alone)
    assert [a + b for a, b in zip(*shares)] == alone


def test_torchrun_two_processes(tmp_path, scenes):
    run = tmp_path / "ddp"
    args = ["maskrcnn", "train", scenes / "train" / "gt.json", "--images-dir", scenes / "train" / "images"]
    args += ["--out", run, "--iters", "2", "--batch-size", "2", "--model", "mnv3-fpn", "--device", "cpu"]
    torchrun([*args, "--learned-floor", "0"])
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 2 and not any(k.startswith("module.") for k in ckpt["model"])
    assert [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()] == [1, 2]
    cfg = MaskRCNNConfig(iters=3, **TINY)
    assert train(cfg, scenes / "train" / "gt.json", scenes / "train" / "images", run, resume=True)["step"] == 3


def test_ground_truth_as_detections_scores_one(scenes):
    gt = read_dataset(scenes / "test" / "gt.json")
    dets = [
        {"image_id": i.image_id, "category_id": i.category_id, "segmentation": i.amodal, "score": 1.0}
        for i in gt.instances
    ]
    metrics = coco_ap(gt, dets)
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AP50"] == pytest.approx(1.0)
    assert metrics["box_AP"] == pytest.approx(1.0)
    assert coco_ap(gt, [])["AP"] == 0.0


def detections_of(gt, key):
    """Each object's visible or amodal mask as a detection (a fully hidden object's empty visible mask none)."""
    return [
        {"image_id": i.image_id, "category_id": i.category_id, "segmentation": getattr(i, key), "score": 1.0}
        for i in gt.instances
        if rle_area(getattr(i, key))
    ]


def test_a_perfect_prediction_scores_100_and_modal_masks_lose_only_on_occluded_objects(scenes):
    gt = read_dataset(scenes / "test" / "gt.json")
    occluded = occluded_ids(gt)
    assert 0 < len(occluded) < len(gt.instances)
    perfect = score(gt, detections_of(gt, "amodal"), {i.id: i.amodal for i in gt.instances})
    for key in ("AP", "occluded_AP", "occluded_box_AP", "occluded_miou", "occluded_boxed_miou"):
        assert perfect[key] == pytest.approx(1.0), key
    modal = score(gt, detections_of(gt, "modal"), {i.id: i.modal for i in gt.instances})
    assert modal["occluded_miou"] < 1.0 and modal["occluded_boxed_miou"] < 1.0
    assert modal["occluded_AP"] < perfect["occluded_AP"]
    # on the unoccluded objects alone (the occluded ones ignored) both score the same
    unoccluded_modal = coco_ap(gt, detections_of(gt, "modal"), ignore=occluded)
    assert unoccluded_modal["AP"] == pytest.approx(coco_ap(gt, detections_of(gt, "amodal"), ignore=occluded)["AP"])


def square_behind_bar():
    """A square (1) whose right part a bar (2) hides, as ground truth with amodal masks, and its
    visible and amodal masks as RLEs."""
    amodal = np.zeros((64, 64), bool)
    amodal[10:40, 10:40] = True
    bar = np.zeros_like(amodal)
    bar[5:45, 30:50] = True
    rles = [encode_crop(Crop(m), 64, 64) for m in (amodal & ~bar, amodal, bar)]
    instances = [
        Instance(1, 1, 1, rles[0], rle_bbox(rles[0]), amodal=rles[1]),
        Instance(2, 1, 1, rles[2], rle_bbox(rles[2]), amodal=rles[2]),
    ]
    gt = Dataset(None, "coco_amodal", [ImageRecord(1, 64, 64, None)], instances, [{"id": 1, "name": "object"}])
    return gt, rles[0], rles[1]


def test_occluded_objects_are_scored_against_the_detection_matched_to_them_whatever_its_score():
    gt, visible, amodal = square_behind_bar()
    assert occluded_ids(gt) == {1}

    def detection(mask, confidence, category=1):
        return {"image_id": 1, "category_id": category, "segmentation": mask, "score": confidence}

    # a low score still matches: no score cut-off
    assert score(gt, [detection(amodal, 0.1)])["occluded_miou"] == pytest.approx(1.0)
    # as in COCO, a detection matches objects of its own category only
    assert matched_detections(gt, [detection(amodal, 1.0, category=2)]) == {}
    # matched in order of score, as COCO matches: the surer (visible-mask) detection takes the
    # square, the better mask behind it is left to match nothing
    got = score(gt, [detection(visible, 0.9), detection(amodal, 0.8)])["occluded_miou"]
    assert got == pytest.approx(rle_area(visible) / rle_area(amodal))
    # a detection whose box overlaps the square's amodal box less than half matches nothing
    corner = np.zeros((64, 64), bool)
    corner[10:20, 10:20] = True
    assert score(gt, [detection(encode_crop(Crop(corner), 64, 64), 1.0)])["occluded_miou"] == 0.0


def test_masks_on_the_ground_truth_boxes_cover_every_object(tmp_path, scenes):
    train(MaskRCNNConfig(iters=2, **TINY), scenes / "train" / "gt.json", scenes / "train" / "images", tmp_path / "r")
    from amodalize.check.maskrcnn import load_run

    model, labels = load_run(tmp_path / "r")
    gt = read_dataset(scenes / "test" / "gt.json")
    masks = predict_on_boxes(model, labels, gt, scenes / "test" / "images")
    assert set(masks) == {i.id for i in gt.instances if not i.iscrowd}
    assert all(m["size"] == [64, 64] for m in masks.values())


def test_compare_writes_table_json_and_chart(tmp_path, scenes):
    args = [
        "maskrcnn",
        "compare",
        scenes / "train" / "modal.json",
        scenes / "train" / "gt.json",
        "--gt",
        scenes / "test" / "gt.json",
        "--images-dir",
        scenes / "train" / "images",
        "--gt-images-dir",
        scenes / "test" / "images",
        "--out",
        tmp_path / "cmp",
        "--iters",
        "2",
        "--seeds",
        "2",
        "--device",
        "cpu",
        "--learned-floor",
        "0",
    ]
    result = invoke(args)
    assert "mask AP" in result.stderr and "occluded" in result.stderr and "spread" in result.stderr
    report = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    rows = report["rows"]
    assert list(rows) == ["modal", "gt"] and all(r["seeds"] == [0, 1] for r in rows.values())
    assert [(r["labels"], r["seed"]) for r in report["runs"]] == [("modal", 0), ("modal", 1), ("gt", 0), ("gt", 1)]
    for name, row in rows.items():
        assert {"mask_ap", "occluded_ap", "occluded_miou", "box_ap"} <= set(row)
        runs = [r["occluded_miou"] for r in report["runs"] if r["labels"] == name]
        score = row["occluded_miou"]
        assert score["per_seed"] == runs and score["mean"] == pytest.approx(sum(runs) / 2)
        assert score["spread"] == pytest.approx(max(runs) - min(runs))
    paired = report["paired"]
    assert paired["against"] == "modal" and list(paired["rows"]) == ["gt"]
    gt_minus_modal = [a - b for a, b in zip(rows["gt"]["mask_ap"]["per_seed"], rows["modal"]["mask_ap"]["per_seed"])]
    assert paired["rows"]["gt"]["mask_ap"]["per_seed"] == pytest.approx(gt_minus_modal)
    assert "minus modal, seed by seed" in result.stderr
    assert (tmp_path / "cmp" / "modal" / "seed-1" / "checkpoint.pt").is_file()
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 0


def test_missing_torchvision_is_explained(tmp_path, scenes, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # makes `import torchvision` fail
    result = invoke(
        [
            "maskrcnn",
            "train",
            scenes / "train" / "gt.json",
            "--images-dir",
            scenes / "train" / "images",
            "--out",
            tmp_path / "run",
            "--iters",
            "1",
            "--device",
            "cpu",
        ],
        exit_code=1,
    )
    assert "needs torchvision" in result.stderr and "amodalize[maskrcnn]" in result.stderr
    invoke(["synth", tmp_path / "s", "--images", "1", "--size", "48"])  # everything else still works


def test_compare_from_a_shared_start_fine_tunes_every_source_from_one_base(tmp_path, scenes):
    args = ["maskrcnn", "compare", scenes / "train" / "gt.json", "--gt", scenes / "test" / "gt.json"]
    args += ["--images-dir", scenes / "train" / "images", "--gt-images-dir", scenes / "test" / "images"]
    args += ["--out", tmp_path / "cmp", "--iters", "2", "--base", scenes / "train" / "modal.json"]
    invoke(
        [*args, "--base-iters", "3", "--base-lr", "0.03", "--lr", "0.004", "--device", "cpu", "--learned-floor", "0"]
    )
    base = json.loads((tmp_path / "cmp" / "base" / "config.json").read_text())
    run = json.loads((tmp_path / "cmp" / "gt" / "config.json").read_text())
    assert base["annotations"].endswith("modal.json") and (base["config"]["iters"], base["config"]["lr"]) == (3, 0.03)
    assert run["init"] == str(tmp_path / "cmp" / "base") and (run["config"]["iters"], run["config"]["lr"]) == (2, 0.004)
    report = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert {k: report["base"][k] for k in ("labels", "iters", "lr")} == {
        "labels": str(scenes / "train" / "modal.json"),
        "iters": 3,
        "lr": 0.03,
    }
    assert 0 <= report["base"]["box_ap_check"] <= 1
    assert list(report["rows"]) == ["gt"]


def test_fine_tuning_starts_from_the_given_weights(tmp_path, scenes):
    cfg = MaskRCNNConfig(iters=2, **TINY)
    train(cfg, scenes / "train" / "modal.json", scenes / "train" / "images", tmp_path / "a")
    zero = MaskRCNNConfig(**{**TINY, "iters": 1, "lr": 0.0, "warmup": 1})
    train(zero, scenes / "train" / "gt.json", scenes / "train" / "images", tmp_path / "b", init=tmp_path / "a")
    a, b = (torch.load(tmp_path / r / "checkpoint.pt", weights_only=True)["model"] for r in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a if "num_batches" not in k)  # lr 0: the start unchanged


def test_heads_only_fine_tuning_keeps_the_backbone_and_proposals_of_its_start(tmp_path, scenes):
    train(MaskRCNNConfig(iters=2, **TINY), scenes / "train" / "modal.json", scenes / "train" / "images", tmp_path / "a")
    cfg = MaskRCNNConfig(**{**TINY, "iters": 2, "lr": 0.05, "warmup": 1, "heads_only": True})
    train(cfg, scenes / "train" / "gt.json", scenes / "train" / "images", tmp_path / "b", init=tmp_path / "a")
    a, b = (torch.load(tmp_path / r / "checkpoint.pt", weights_only=True)["model"] for r in "ab")
    kept = [k for k in a if k.startswith(("backbone.", "rpn."))]
    heads = [k for k in a if k.startswith("roi_heads.")]
    assert kept and all(torch.equal(a[k], b[k]) for k in kept)
    assert any(not torch.equal(a[k], b[k]) for k in heads if k.endswith("mask_fcn_logits.weight"))
    with pytest.raises(ValueError, match="init"):
        train(cfg, scenes / "train" / "gt.json", scenes / "train" / "images", tmp_path / "c")
    args = ["maskrcnn", "train", scenes / "train" / "gt.json", "--images-dir", scenes / "train" / "images"]
    result = invoke([*args, "--out", tmp_path / "d", "--heads-only", "--device", "cpu"], exit_code=2)
    assert "--heads-only fine-tunes a trained start" in result.stderr and not (tmp_path / "d").exists()


def test_paired_differences_are_taken_seed_by_seed_against_the_first_row():
    runs = {
        "raw": [{"seed": 0, "AP": 0.30, "occluded_miou": 0.5}, {"seed": 1, "AP": 0.10, "occluded_miou": 0.4}],
        "gt": [{"seed": 0, "AP": 0.32, "occluded_miou": 0.6}, {"seed": 1, "AP": 0.13, "occluded_miou": None}],
    }
    rows = {name: summarize_seeds(r) for name, r in runs.items()}
    paired = paired_differences(rows)
    assert list(paired) == ["gt"] and paired["gt"]["seeds"] == [0, 1]
    # each seed gains 2-3 points, although the seeds differ by 20 between themselves
    assert paired["gt"]["mask_ap"]["per_seed"] == pytest.approx([0.02, 0.03])
    gain = paired["gt"]["mask_ap"]
    assert gain["mean"] == pytest.approx(0.025) and gain["spread"] == pytest.approx(0.01)
    assert rows["gt"]["mask_ap"]["spread"] == pytest.approx(0.19)
    # a seed without the score drops out of that score's difference only
    assert paired["gt"]["occluded_miou"]["per_seed"][1] is None
    assert paired["gt"]["occluded_miou"]["mean"] == pytest.approx(0.1) and paired["gt"]["occluded_miou"]["spread"] == 0


def test_seed_summary_is_mean_and_range_of_each_score():
    runs = [
        {"seed": 0, "AP": 0.2, "occluded_miou": 0.5, "occluded_boxed_miou": None},
        {"seed": 1, "AP": 0.4, "occluded_miou": 0.3, "occluded_boxed_miou": None},
    ]
    summary = summarize_seeds(runs)
    assert summary["seeds"] == [0, 1]
    assert summary["mask_ap"]["mean"] == pytest.approx(0.3) and summary["mask_ap"]["spread"] == pytest.approx(0.2)
    assert summary["occluded_miou"]["per_seed"] == [0.5, 0.3]
    assert summary["occluded_boxed_miou"] == {"mean": None, "spread": None, "per_seed": [None, None]}
    chart = bar_chart([("a", 0.3, 0.2, 0.4), ("b", 0.1, 0.1, 0.1)], "title")
    assert chart.ndim == 3 and chart.shape[1] == 640 and (chart < 255).any()


def test_a_start_that_cannot_learn_is_refused(tmp_path, scenes):
    """lr 0 leaves the detector as initialised: train says so in one line and exits 1, and compare
    stops after the shared start without writing a comparison."""
    common = ["--images-dir", scenes / "train" / "images", "--device", "cpu", "--batch-size", "2"]
    train_args = ["maskrcnn", "train", scenes / "train" / "gt.json", "--out", tmp_path / "run", "--iters", "2"]
    result = invoke([*train_args, "--lr", "0", *common], exit_code=1)
    lines = result.stderr.strip().splitlines()
    said = re.search(r"did not learn to detect: box AP ([0-9.]+)% on 4 images of gt.json, under the 5%", lines[-1])
    assert said and float(said.group(1)) < 5 and "Traceback" not in result.stderr
    compare_args = ["maskrcnn", "compare", scenes / "train" / "gt.json", "--gt", scenes / "test" / "gt.json"]
    compare_args += ["--gt-images-dir", scenes / "test" / "images", "--out", tmp_path / "cmp", "--iters", "2"]
    compare_args += ["--base", scenes / "train" / "modal.json", "--base-iters", "2", "--base-lr", "1e-12"]
    result = invoke([*compare_args, *common], exit_code=1)
    assert "the shared start (modal) did not learn to detect" in result.stderr
    assert not (tmp_path / "cmp" / "compare.json").exists() and not (tmp_path / "cmp" / "gt").exists()
