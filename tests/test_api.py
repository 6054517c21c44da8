"""The Python API gives what the CLI writes, in memory, and raises the CLI's errors."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

import amodalize
import amodalize.infer.settings
from amodalize.data.formats import read_dataset
from amodalize.data.masks import Crop, decode_crop, encode_crop
from amodalize.errors import InputError
from tests.conftest import COCOA_DEMO, invoke

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model():
    return amodalize.Amodalizer()


def one_image_files(tmp_path):
    """Made one-image files (masks that partition the image, and masks drawn over each other), and
    the real COCOA demo's image 5 where it is found."""
    invoke(["synth", tmp_path / "synth", "--images", "1", "--size", "128", "--seed", "3"])
    invoke(["synth", tmp_path / "drawn", "--images", "1", "--size", "128", "--seed", "3", "--outlines", "0.5,0.5,0"])
    files = [tmp_path / "synth" / "modal.json", tmp_path / "drawn" / "modal.json"]
    if (COCOA_DEMO / "5.json").is_file():
        files.append(COCOA_DEMO / "5.json")
    return files


def test_complete_gives_what_convert_writes(tmp_path):
    for src in one_image_files(tmp_path):
        out = tmp_path / "out.json"
        invoke(["convert", src, out, "--workers", "1"])
        doc = json.loads(out.read_text())
        dataset = read_dataset(src)
        image = dataset.images[0]
        masks = [decode_crop(i.modal).within((0, 0, image.width, image.height)) for i in dataset.instances]
        model = amodalize.Amodalizer(sample=src)  # decided on the file, as convert decides
        assert model.record["decided"] == doc["info"]["amodalize"]["decided"]
        result = model.complete(masks)
        assert all(m.shape == (image.height, image.width) and m.dtype == bool for m in result.amodal)
        ids = [i.id for i in dataset.instances]
        written = [
            (p["occluder_id"], p["occludee_id"], p["score"], p.get("confidence")) for p in doc["occlusion_pairs"]
        ]
        assert written and [(ids[e.occluder], ids[e.occludee], e.score, e.confidence) for e in result.edges] == written
        encoded = [encode_crop(Crop(m), image.height, image.width) for m in result.amodal]
        assert encoded == [a["segmentation"] for a in doc["annotations"]]
        assert result.amodal_confidence == [a.get("amodal_confidence") for a in doc["annotations"]]
        assert result.settings["settings"] == doc["info"]["amodalize"]["settings"]
        visible = [encode_crop(Crop(m), image.height, image.width) for m in result.visible]
        assert visible == [a["visible_mask"] for a in doc["annotations"]]
        split = [v != i.modal for v, i in zip(visible, dataset.instances)]
        assert any(split) == (src.parent.name == "drawn"), src


def test_a_predictor_decides_once_and_then_only_completes(model, tmp_path, monkeypatch):
    assert model.decided["source"] == "the checkpoint's calibration at gap 0 px"
    assert model.decided["fusion_source"] == "the calibration's" and model.options.fusion is not None
    invoke(["synth", tmp_path, "--images", "3", "--size", "96", "--seed", "5"])
    dataset = read_dataset(tmp_path / "modal.json")
    images = [
        [decode_crop(i.modal).within((0, 0, im.width, im.height)) for i in dataset.by_image[im.id]]
        for im in dataset.images
    ]

    def refuse(*args, **kwargs):
        raise AssertionError("complete() decided settings again")

    monkeypatch.setattr(amodalize.api, "decide", refuse)
    for name in ("decide", "calibrate", "fit_fusion", "estimate_gap"):
        monkeypatch.setattr(amodalize.infer.settings, name, refuse)
    one_by_one = [model.complete(masks) for masks in images]
    together = model.complete_many(images)
    for a, b in zip(one_by_one, together):
        assert a.edges == b.edges and a.amodal_confidence == b.amodal_confidence
        assert all(np.array_equal(x, y) for x, y in zip(a.amodal, b.amodal))
    assert any(r.edges for r in together) and all(r.settings == model.record for r in together)


def test_convert_file_is_the_command(tmp_path):
    invoke(["synth", tmp_path, "--images", "2", "--size", "96", "--seed", "4"])
    invoke(["convert", tmp_path / "modal.json", tmp_path / "cli.json", "--method", "convex-r", "--order", "convex"])
    summary = amodalize.convert_file(
        str(tmp_path / "modal.json"), str(tmp_path / "api.json"), method="convex-r", order="convex"
    )
    cli, api = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("cli", "api"))
    assert api["annotations"] == cli["annotations"] and api["occlusion_pairs"] == cli["occlusion_pairs"]
    assert summary["images"] == 2
    with pytest.raises(InputError, match="no such file"):
        amodalize.convert_file(tmp_path / "missing.json", tmp_path / "x.json")


def test_a_misspelt_option_is_named_where_it_is_given(tmp_path):
    with pytest.raises(InputError, match="unknown option amodal_thr; the options are .*amodal_th"):
        amodalize.Amodalizer(amodal_thr=0.3)
    with pytest.raises(InputError, match="unknown option keep_visibel"):
        amodalize.convert_file(tmp_path / "any.json", tmp_path / "out.json", keep_visibel=True)


def test_bad_masks_raise_input_errors(model):
    with pytest.raises(InputError, match="no mask given"):
        model.complete([])
    with pytest.raises(InputError, match="mask 1 has shape"):
        model.complete([np.zeros((8, 8), bool), np.zeros((8, 9), bool)])
    with pytest.raises(InputError, match="1 categories for 2 masks"):
        model.complete([np.zeros((8, 8), bool)] * 2, categories=[3])


def test_the_readme_snippet_runs(tmp_path, monkeypatch, capsys):
    text = (ROOT / "README.md").read_text()
    snippet = re.search(r"### Python API\n\n```python\n(.*?)```", text, re.S).group(1)
    invoke(["synth", tmp_path, "--images", "2", "--size", "96"])
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, "README.md", "exec"), {})
    assert (tmp_path / "amodal.json").is_file()
    printed = capsys.readouterr().out
    assert "Edge(occluder=1, occludee=0" in printed  # the pole is in front of the box


def test_import_amodalize_loads_no_torch():
    import subprocess
    import sys

    code = "import sys, amodalize; assert 'torch' not in sys.modules; amodalize.Amodalizer"
    subprocess.run([sys.executable, "-c", code], check=True)
