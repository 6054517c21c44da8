"""De-occlusion end to end on the real COCOA demo images with tiny, briefly trained models."""

import json
import shutil

import cv2
import numpy as np
import pytest

from amodalize.data.formats import read_dataset
from amodalize.data.masks import decode_crop
from amodalize.data.synth import SynthOptions, make_dataset
from amodalize.data.writer import write_json_atomic
from amodalize.scene.deocclude import objects_from_file
from amodalize.scene.layers import SceneOptions, background_hole
from tests.conftest import invoke, torchrun
from tests.train.test_content import TINY as TINY_C
from tests.train.test_loop import TINY as TINY_M


def _train(args, settings):
    for item in settings:
        args += ["--set", item]
    invoke(args)


@pytest.fixture(scope="module")
def models(tmp_path_factory, cocoa_files):
    folder = tmp_path_factory.mktemp("models")
    files = [cocoa_files / f"{k}.json" for k in range(1, 6)]
    common = ["--iters", "3", "--device", "cpu"]
    _train(["train", "--model", "pcnet-c", *files, "--images-dir", cocoa_files, "--out", folder / "c", *common], TINY_C)
    _train(["train", *files, "--out", folder / "m", *common], TINY_M)
    return folder / "m" / "checkpoint.pt", folder / "c" / "checkpoint.pt"


def _layers(folder):
    doc = json.loads((folder / "layers.json").read_text())
    alphas = {}
    for obj in doc["objects"]:
        rgba = cv2.imread(str(folder / obj["file"]), cv2.IMREAD_UNCHANGED)
        assert rgba.shape[2] == 4 and tuple(obj["box"][2:]) == (rgba.shape[1], rgba.shape[0])
        alphas[obj["id"]] = rgba
    return doc, alphas


def _alpha_equals(rgba, box, rle):
    crop = decode_crop(rle)
    assert (crop.x0, crop.y0, crop.mask.shape[1], crop.mask.shape[0]) == tuple(box)
    assert np.array_equal(rgba[..., 3] > 0, crop.mask) and set(np.unique(rgba[..., 3])) <= {0, 255}


def test_layers_from_ground_truth_masks_and_recompose(tmp_path, cocoa_files, models):
    _, ckpt_c = models
    out = tmp_path / "layers"
    result = invoke(["deocclude", cocoa_files / "3.json", out, "--images-dir", cocoa_files, "--checkpoint-c", ckpt_c])
    assert "1 images (0 already done)" in result.stderr
    gt = read_dataset(cocoa_files / "3.json")
    (image,) = gt.images
    doc, layers = _layers(out / str(image.id))
    insts = {i.id: i for i in gt.instances if not i.iscrowd}
    assert set(layers) == set(insts) and sorted(doc["paint_order"]) == sorted(insts)
    for obj in doc["objects"]:
        _alpha_equals(layers[obj["id"]], obj["box"], insts[obj["id"]].amodal)
    assert any(obj["painted_pixels"] > 0 for obj in doc["objects"])
    background = cv2.imread(str(out / str(image.id) / "background.png"))
    assert background.shape == (image.height, image.width, 3)

    # no edits: the layers repaint the visible image, up to the repainted seams
    same = invoke(["recompose", out, "-o", tmp_path / "same.png"])
    error = float(same.stderr.split("original image: ")[1].split()[0])
    original = cv2.imread(str(cocoa_files / image.file_name)).astype(int)
    painted = cv2.imread(str(tmp_path / "same.png")).astype(int)
    assert error == pytest.approx(np.abs(painted - original).mean(), abs=0.01)
    assert error < 15 and np.mean(np.all(painted == original, axis=2)) > 0.7
    # without repainted seams the visible image comes back exactly
    exact = tmp_path / "exact"
    args = ["deocclude", cocoa_files / "3.json", exact, "--images-dir", cocoa_files, "--checkpoint-c", ckpt_c]
    invoke([*args, "--hole-dilate", 0, "--background-dilate", 0])
    assert "original image: 0.00" in invoke(["recompose", exact, "-o", tmp_path / "exact.png"]).stderr
    assert np.array_equal(cv2.imread(str(tmp_path / "exact.png")), cv2.imread(str(cocoa_files / image.file_name)))

    # deleting the front-most object changes only pixels under it (and its repainted seam)
    front = doc["paint_order"][-1]
    edited = tmp_path / "edited.png"
    invoke(["recompose", out, "--delete", front, "-o", edited, "--compare", tmp_path / "side.png"])
    changed = np.any(cv2.imread(str(edited)).astype(int) != painted, axis=2)
    visible = decode_crop(insts[front].modal).within((0, 0, image.width, image.height))
    grown = cv2.dilate(visible.astype(np.uint8), np.ones((31, 31), np.uint8)) > 0
    assert changed[visible].mean() > 0.5 and not changed[~grown].any()
    side = cv2.imread(str(tmp_path / "side.png"))
    assert side.shape[1] >= 3 * image.width and side.shape[0] > image.height

    # the OpenCV background: cv2.inpaint of the objects' grown visible masks, nothing else changed
    cv = tmp_path / "opencv"
    invoke(
        [
            "deocclude",
            cocoa_files / "3.json",
            cv,
            "--images-dir",
            cocoa_files,
            "--checkpoint-c",
            ckpt_c,
            "--background",
            "opencv",
        ]
    )
    rgb = np.ascontiguousarray(cv2.imread(str(cocoa_files / image.file_name))[..., ::-1])
    objects = objects_from_file(gt, image)
    hole = background_hole(rgb, objects, SceneOptions()).astype(np.uint8)
    expected = cv2.inpaint(rgb, hole, 5, cv2.INPAINT_TELEA)
    assert np.array_equal(cv2.imread(str(cv / str(image.id) / "background.png"))[..., ::-1], expected)
    union = np.zeros(hole.shape, bool)
    for obj in objects:
        union |= obj.visible.within((0, 0, image.width, image.height))
    assert hole[union].all() and hole.sum() > union.sum()  # every object's pixels, grown

    both = invoke(["recompose", out, "--delete", front, "--swap", f"{front},{doc['paint_order'][0]}", "-o", edited], 2)
    assert "cannot also be moved" in both.stderr
    assert "no object 999" in invoke(["recompose", out, "--delete", 999, "-o", tmp_path / "x.png"], 2).stderr
    bad = invoke(["recompose", out, "--shift", "3:ten", "-o", tmp_path / "x.png"], 2)
    assert "--shift" in bad.stderr and not (tmp_path / "x.png").exists()


def test_layers_follow_pcnet_m_conversion_and_resume(tmp_path, cocoa_files, models):
    ckpt_m, ckpt_c = models
    out = tmp_path / "layers"
    args = ["deocclude", cocoa_files / "1.json", out, "--images-dir", cocoa_files]
    args += ["--checkpoint-c", ckpt_c, "--checkpoint-m", ckpt_m, "--device", "cpu"]
    invoke(args)
    invoke(["convert", cocoa_files / "1.json", tmp_path / "amodal.json", "--checkpoint", ckpt_m, "--device", "cpu"])
    converted = read_dataset(tmp_path / "amodal.json")
    (image,) = converted.images
    doc, layers = _layers(out / str(image.id))
    for obj in doc["objects"]:
        inst = next(i for i in converted.instances if i.id == obj["id"])
        _alpha_equals(layers[obj["id"]], obj["box"], inst.amodal)
        assert obj["occluded_by"] == sorted(inst.occluded_by)
    assert doc["masks"] == "pcnet-m" and doc["checkpoint_m"]["kind"] == "amodalize"

    again = invoke(args)
    assert "1 images (1 already done)" in again.stderr
    shutil.rmtree(out / str(image.id))
    assert "(0 already done)" in invoke(args).stderr and (out / str(image.id) / "layers.json").exists()
    assert not list(out.glob(".*.tmp"))


def test_deocclude_errors_are_one_line(tmp_path, cocoa_files, models):
    ckpt_m, ckpt_c = models
    modal = tmp_path / "modal.json"  # a plain COCO file: visible masks only
    gt = read_dataset(cocoa_files / "1.json")
    write_json_atomic(
        modal,
        {
            "images": [
                {"id": im.id, "width": im.width, "height": im.height, "file_name": im.file_name} for im in gt.images
            ],
            "annotations": [
                {
                    "id": i.id,
                    "image_id": i.image_id,
                    "category_id": 1,
                    "segmentation": i.modal,
                    "bbox": i.bbox,
                    "area": 1,
                    "iscrowd": 0,
                }
                for i in gt.instances
            ],
            "categories": [{"id": 1, "name": "object"}],
        },
    )
    base = ["deocclude", modal, tmp_path / "out", "--images-dir", cocoa_files]
    shipped = tmp_path / "shipped"  # no amodal masks and no --checkpoint-m: the shipped PCNet-M
    invoke(["deocclude", modal, shipped, "--images-dir", cocoa_files, "--checkpoint-c", ckpt_c])
    doc = json.loads(next(shipped.glob("*/layers.json")).read_text())
    assert doc["masks"] == "pcnet-m" and doc["checkpoint_m"]["shipped_model"] == "general"
    wrong_c = invoke([*base, "--checkpoint-c", ckpt_m, "--checkpoint-m", ckpt_m], 2)
    assert "not a PCNet-C checkpoint" in wrong_c.stderr
    wrong_m = invoke([*base, "--checkpoint-c", ckpt_c, "--checkpoint-m", ckpt_c], 2)
    assert "PCNet-C (content) checkpoint" in wrong_m.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = invoke(
        ["deocclude", cocoa_files / "1.json", tmp_path / "out", "--images-dir", empty, "--checkpoint-c", ckpt_c], 2
    )
    assert "image file(s) missing" in missing.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_shards_and_torchrun_write_what_one_run_writes(tmp_path, models):
    _, ckpt_c = models
    gt = make_dataset(tmp_path / "synth", 4, 3, SynthOptions(width=96, height=96, render=True))[1]
    base = ["--images-dir", tmp_path / "synth" / "images", "--checkpoint-c", ckpt_c, "--device", "cpu"]
    invoke(["deocclude", gt, tmp_path / "one", *base])
    for k in range(2):
        result = invoke(["deocclude", gt, tmp_path / "shards", *base, "--shard", f"{k}/2"])
        assert "2 images (0 already done)" in result.stderr
    torchrun(["deocclude", gt, tmp_path / "ddp", *base])

    def files(folder):
        return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.suffix == ".png"}

    one = files(tmp_path / "one")
    assert len({p.parent for p in one}) == 4
    assert files(tmp_path / "shards") == one and files(tmp_path / "ddp") == one
    assert "expected K/N" in invoke(["deocclude", gt, tmp_path / "x", *base, "--shard", "2"], 2).stderr
