"""Sharded, merged, resumed and torchrun conversions give exactly the single-run file."""

import json

import pytest

from amodalize.data.synth import SynthOptions, make_dataset
from amodalize.infer.settings import ConvertRequest
from amodalize.pipeline import convert_file, parts_dir
from tests.conftest import invoke, torchrun
from tests.infer.test_pcnet import tiny_model


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale")
    modal, _ = make_dataset(root, 7, 11, SynthOptions(width=96, height=96))
    return modal, tiny_model(root / "m.pt")


def body(path):
    doc = json.loads(path.read_text())
    doc["info"]["amodalize"].pop("input")
    return doc


def test_shards_merge_to_the_single_run(tmp_path, data):
    modal, ckpt = data
    invoke(["convert", modal, tmp_path / "one.json", "--checkpoint", ckpt])
    parts = [tmp_path / f"p{k}.json" for k in range(3)]
    for k, part in enumerate(parts):
        invoke(["convert", modal, part, "--checkpoint", ckpt, "--shard", f"{k}/3"])
    invoke(["merge", parts[2], parts[0], parts[1], tmp_path / "merged.json"])
    assert body(tmp_path / "merged.json") == body(tmp_path / "one.json")
    missing = invoke(["merge", parts[0], parts[1], tmp_path / "bad.json"], exit_code=2)
    assert "each of 0..2 must appear once" in missing.stderr and not (tmp_path / "bad.json").exists()
    invoke(["convert", modal, tmp_path / "other.json", "--checkpoint", ckpt, "--shard", "2/3", "--amodal-th", "0.3"])
    mixed = invoke(["merge", parts[0], parts[1], tmp_path / "other.json", tmp_path / "bad.json"], exit_code=2)
    assert "settings" in mixed.stderr


def test_interrupted_conversion_resumes(tmp_path, data):
    modal, ckpt = data
    full = tmp_path / "full.json"
    convert_file(modal, full, ConvertRequest(checkpoint=ckpt), flush_every=2)
    out = tmp_path / "out.json"
    seen = []

    def stop_after_two_chunks(n):
        seen.append(n)
        if sum(seen) >= 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convert_file(modal, out, ConvertRequest(checkpoint=ckpt), flush_every=2, on_progress=stop_after_two_chunks)
    assert not out.exists() and len(list(parts_dir(out).glob("chunk-*.json"))) == 1  # the second was not flushed
    started = []
    request = ConvertRequest(checkpoint=ckpt)
    convert_file(modal, out, request, flush_every=2, on_start=lambda n, done: started.append((n, done)))
    assert started == [(7, 2)]
    assert body(out) == body(full) and not parts_dir(out).exists()


@pytest.mark.slow
def test_torchrun_two_processes_merge(tmp_path, data):
    modal, ckpt = data
    invoke(["convert", modal, tmp_path / "one.json", "--checkpoint", ckpt])
    out = tmp_path / "ddp.json"
    torchrun(["convert", modal, out, "--checkpoint", ckpt])
    assert body(out) == body(tmp_path / "one.json") and not parts_dir(out).exists()
