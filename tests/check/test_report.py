"""The quality estimates of a converted file and the `amodalize report` page built on them."""

import json
import re
import shutil
from html.parser import HTMLParser

import cv2
import numpy as np
import pytest
import torch

from amodalize.check.quality import EDGE_MARGIN, estimate_accuracy, estimate_iou, summarize
from amodalize.check.report import INDEX, REVIEW_FILE, rank_images, review_subset, uncertain_items
from amodalize.data.formats import read_dataset
from amodalize.data.synth import SynthOptions, make_dataset
from amodalize.data.writer import augment, write_json_atomic
from amodalize.errors import InputError
from amodalize.infer.batcher import Completer
from amodalize.infer.convert import ConvertOptions
from amodalize.infer.fusion import PAIR_FEATURES
from amodalize.infer.hosts import convert_dataset
from tests.conftest import invoke
from tests.infer.test_pcnet import HullNet


def test_accuracy_estimate_holds_what_calibrated_confidences_score():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.55, 1.0, 200)
    e = estimate_accuracy(confidence)
    assert e.value == pytest.approx(confidence.mean()) and e.count == 200
    assert e.high - e.value >= EDGE_MARGIN
    # outcomes drawn as calibrated confidences would have them fall inside nearly always
    outcomes = (rng.random((2000, 200)) < confidence).mean(axis=1)
    assert np.mean([e.contains(o) for o in outcomes]) > 0.99
    assert not e.contains(confidence.mean() - 0.2)
    assert estimate_accuracy(np.array([])) is None


def test_iou_interval_narrows_with_more_objects_and_stays_in_0_1():
    few, many = estimate_iou(np.full(4, 0.98)), estimate_iou(np.full(400, 0.98))
    assert many.high - many.low < few.high - few.low
    assert few.high == 1.0 and few.low < 0.98


def handmade() -> dict:
    return {
        "images": [{"id": k, "width": 8, "height": 8, "file_name": f"{k}.jpg"} for k in (1, 2, 3)],
        "annotations": [
            {"id": 10, "image_id": 1, "area": 30, "visible_area": 20, "amodal_confidence": 0.7, "occluded_by": [11]},
            {"id": 11, "image_id": 1, "area": 10, "visible_area": 10, "amodal_confidence": 0.2, "occluded_by": []},
            {"id": 20, "image_id": 2, "area": 12, "visible_area": 8, "amodal_confidence": 0.9, "occluded_by": [21]},
            {"id": 21, "image_id": 2, "area": 5, "visible_area": 5, "amodal_confidence": 1.0, "occluded_by": []},
            {"id": 30, "image_id": 3, "area": 5, "visible_area": 5, "iscrowd": 1, "custom": "kept"},
        ],
        "occlusion_pairs": [
            {"image_id": 1, "occluder_id": 11, "occludee_id": 10, "score": 0.4, "confidence": 0.95},
            {"image_id": 2, "occluder_id": 21, "occludee_id": 20, "score": 0.4, "confidence": 0.6},
        ],
    }


def test_summary_counts_what_was_added():
    s = summarize(handmade(), None)
    assert (s["images"], s["instances"], s["occluded_instances"], s["edges"]) == (3, 4, 2, 2)
    assert s["hidden_area"] == 14 and s["hidden_share"] == pytest.approx(14 / 43)
    assert s["order_accuracy"]["value"] == pytest.approx(0.775)
    assert s["occluded_iou"]["value"] == pytest.approx(0.8)  # the unoccluded 0.2 is not a completion
    assert sum(s["edge_histogram"]["counts"]) == 2 and sum(s["iou_histogram"]["counts"]) == 2


def test_a_file_without_confidences_is_refused():
    doc = handmade()
    for a in doc["annotations"]:
        a.pop("amodal_confidence", None)
    for p in doc["occlusion_pairs"]:
        p.pop("confidence")
    with pytest.raises(InputError, match="amodalize convert"):
        summarize(doc, "x.json")


def test_images_ranked_least_confident_first_and_the_subset_keeps_every_field():
    doc = handmade()
    # image 2: its edge at 0.6; image 1: its completion at 0.7 (the unoccluded 0.2 does not count)
    assert rank_images(uncertain_items(doc)) == [(2, 0.6), (1, 0.7)]
    subset = review_subset(doc, [2])
    assert [im["id"] for im in subset["images"]] == [2]
    assert subset["annotations"] == [a for a in doc["annotations"] if a["image_id"] == 2]
    assert [p["occludee_id"] for p in subset["occlusion_pairs"]] == [20]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A converted file (PCNet-M stand-in with a known answer, fused order with confidences) of
    rendered synth scenes, and its ground truth."""
    root = tmp_path_factory.mktemp("report")
    modal, gt = make_dataset(root / "data", 6, 3, SynthOptions(width=96, height=96, render=True))
    dataset = read_dataset(modal)
    weights = (1.0,) + (0.5,) * (len(PAIR_FEATURES) - 1)
    opts = ConvertOptions("pcnet", "fused", fusion=weights, iou_model=(0.9, -0.5, 0.0, 0.0, 0.0))
    completer = Completer(HullNet(), 32, device=torch.device("cpu"), batch_size=8)
    results = convert_dataset(dataset, opts, completer=completer)
    out = root / "converted.json"
    write_json_atomic(out, augment(dataset, results, {"version": "test", "method": "pcnet", "order_method": "fused"}))
    return out, gt, root / "data" / "images"


class Page(HTMLParser):
    """The pictures, links and text of a page."""

    def __init__(self):
        super().__init__()
        self.sources, self.links, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("img", "script", "link"):
            self.sources.append(attrs.get("src") or attrs.get("href"))
        if tag == "a":
            self.links.append(attrs["href"])

    def handle_data(self, data):
        self.text.append(data)


def parse(path):
    page = Page()
    page.feed(path.read_text())
    return page, " ".join(page.text)


def test_report_end_to_end(converted, tmp_path):
    data, gt, images = converted
    out = tmp_path / "report"
    result = invoke(["report", data, out, "--images-dir", images, "--gt", gt, "--top", "4"])
    assert "estimated ordering accuracy" in result.stderr
    page, text = parse(out / INDEX)
    doc = json.loads(data.read_text())
    s = summarize(doc, data)
    assert f"{s['instances']:,}" in text and f"{s['occluded_instances']:,}" in text
    assert f"{100 * s['order_accuracy']['value']:.1f}" in text
    assert "Against ground truth" in text and "measured" in text
    assert len(page.sources) == len(rank_images(uncertain_items(doc))[:4]) > 0
    assert all((out / src).is_file() for src in page.sources)
    full = [link for link in page.links if link.endswith("-full.jpg")]  # each picture opens at full size
    assert [f.replace("-full", "") for f in full] == page.sources and all((out / f).is_file() for f in full)
    names = {c["name"] for c in doc["categories"]}
    assert any(f" {name} in front of " in text or f" {name} (hidden" in text for name in names)
    assert all("://" not in src and not src.startswith("//") for src in page.sources + page.links)
    assert not re.search(r"https?://|<script", (out / INDEX).read_text())
    review = json.loads((out / REVIEW_FILE).read_text())
    shown = {int(src.split("/")[-1].split(".")[0]) for src in page.sources}
    assert {im["id"] for im in review["images"]} == shown
    assert all("amodal_confidence" in a and "visible_mask" in a for a in review["annotations"])
    from pycocotools.coco import COCO

    assert len(COCO(str(out / REVIEW_FILE)).getAnnIds()) == len(review["annotations"])


def test_missing_image_files_are_drawn_on_a_blank_canvas(converted, tmp_path):
    data, _, _ = converted
    empty = tmp_path / "no-images"
    empty.mkdir()
    result = invoke(["report", data, tmp_path / "r", "--images-dir", empty, "--top", "2"])
    _, text = parse(tmp_path / "r" / INDEX)
    assert "not found" in text and "blank canvas" in text
    assert "2 of the 2 images were not found" in text and "2 of the 2 images" in result.stderr


def test_without_images_dir_the_images_beside_the_file_are_drawn(converted, tmp_path):
    data, _, images = converted
    beside = images / "converted.json"
    shutil.copy(data, beside)
    result = invoke(["report", beside, tmp_path / "r", "--top", "2"])
    _, text = parse(tmp_path / "r" / INDEX)
    assert "not found" not in text and "warning" not in result.stderr
    invoke(["report", data, tmp_path / "blank", "--top", "2"])  # no images beside this one
    for picture in (tmp_path / "r" / "images").iterdir():
        drawn, blank = (cv2.imread(str(d / "images" / picture.name)) for d in (tmp_path / "r", tmp_path / "blank"))
        assert drawn.shape == blank.shape and np.abs(drawn.astype(int) - blank).mean() > 5


def test_a_rerun_replaces_its_report_and_a_foreign_folder_is_refused(converted, tmp_path):
    data, _, _ = converted
    out = tmp_path / "r"
    invoke(["report", data, out, "--top", "3"])
    invoke(["report", data, out, "--top", "1"])
    assert sorted(p.name.split(".")[0].endswith("-full") for p in (out / "images").iterdir()) == [False, True]
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    result = invoke(["report", data, other], exit_code=2)
    assert "holds something other than an earlier report" in result.stderr
    assert [p.name for p in other.iterdir()] == ["keep.txt"]


def test_an_unconverted_file_says_which_command_to_run_and_writes_nothing(converted, tmp_path):
    _, gt, _ = converted
    modal = gt.parent / "modal.json"
    result = invoke(["report", modal, tmp_path / "r"], exit_code=2)
    assert "amodalize convert" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists() and list(tmp_path.iterdir()) == []
