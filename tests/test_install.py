"""The package as a user installs it: no checkout on the path, an empty working directory."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # installs the package into a fresh environment

ROOT = Path(__file__).resolve().parents[1]


def test_installed_package_runs_synth_train_convert_evaluate(tmp_path):
    site, work = tmp_path / "site", tmp_path / "work"
    work.mkdir()
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-compile"]
    done = subprocess.run([*pip, "--target", str(site), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}

    def run(*args: str) -> subprocess.CompletedProcess:
        out = subprocess.run([sys.executable, *args], cwd=work, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, f"{args}: {out.stderr[-2000:]}"
        return out

    where = run("-c", "import amodalize; print(amodalize.__file__)").stdout.strip()
    assert Path(where).is_relative_to(site), where  # the installed copy, not the checkout
    run("-m", "amodalize", "synth", "data", "--images", "4", "--size", "64", "--seed", "3")
    train = ["--iters", "2", "--set", "run.val_samples=8", "--set", "run.calibration_samples=8", "--device", "cpu"]
    trained = run("-m", "amodalize", "train", "data/modal.json", "--out", "run", *train)  # preset chosen by device
    assert "no --config: using the preset pcnet_m/cpu-small" in trained.stderr
    run("-m", "amodalize", "train", "data/modal.json", "--config", "cpu-small", "--out", "run2", *train)
    converted = run("-m", "amodalize", "convert", "data/modal.json", "shipped.json")
    assert "shipped model 'general'" in converted.stderr
    run("-m", "amodalize", "convert", "data/modal.json", "own.json", "--checkpoint", "run/checkpoint.pt")
    for name in ("shipped.json", "own.json"):
        metrics = json.loads(run("-m", "amodalize", "evaluate", name, "data/gt.json", "--json").stdout)
        assert metrics["instances"] > 0 and metrics["pooled_iou"] > 0.5
    info = json.loads((work / "shipped.json").read_text())["info"]["amodalize"]["checkpoint"]
    assert info["shipped_model"] == "general" and Path(info["path"]).is_relative_to(site)
