"""The shipped PCNet-M: it loads, matches its recorded hash, and names resolve."""

import json

import pytest
import torch

from amodalize.errors import InputError
from amodalize.models import registry
from amodalize.models.pcnet_m import load_pcnet_m
from amodalize.models.registry import DEFAULT_MODEL, file_sha256, model_card, resolve_checkpoint, shipped_models


def test_the_shipped_model_loads_and_matches_its_card():
    assert DEFAULT_MODEL in shipped_models()
    card = model_card(DEFAULT_MODEL)
    path, name = resolve_checkpoint(DEFAULT_MODEL)
    assert name == DEFAULT_MODEL and file_sha256(path) == card["sha256"]
    loaded = load_pcnet_m(path)
    assert loaded.kind == "amodalize" and loaded.input_size == card["input_size"]
    assert sum(p.numel() for p in loaded.model.parameters()) == card["parameters"]
    assert loaded.calibration == card["calibration"] and loaded.calibration["samples"] > 0
    assert card["recipe"]["synth"] and card["config"]["model"]["widen"] == 1.0
    assert set(torch.load(path, weights_only=True)) >= {"model", "config", "gap", "calibration"}


def test_names_and_paths_resolve(tmp_path):
    own = tmp_path / "mine.pt"
    own.write_bytes(b"x")
    assert resolve_checkpoint(own) == (own, None)
    with pytest.raises(InputError, match="not a shipped model"):
        resolve_checkpoint("no-such-model")
    with pytest.raises(InputError, match="no such checkpoint file"):
        resolve_checkpoint(tmp_path / "missing.pt")


def test_a_shipped_file_that_does_not_match_its_hash_is_refused(tmp_path, monkeypatch):
    (tmp_path / "m.pt").write_bytes(b"weights")
    (tmp_path / "m.json").write_text(json.dumps({"file": "m.pt", "sha256": "0" * 64}))
    monkeypatch.setattr(registry, "WEIGHTS", tmp_path)
    with pytest.raises(InputError, match="does not match the SHA-256"):
        resolve_checkpoint("m")
