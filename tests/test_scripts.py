"""The scripts keep working: the prepared GPU ones end to end on the CPU (--quick), the benchmarks at
tiny size."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from amodalize.data.formats import read_dataset
from amodalize.data.synth import SynthOptions, make_dataset
from tests.cocoa_like import write_cocoa_like

pytestmark = pytest.mark.slow  # the scripts train and convert end to end

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def run_script(name: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPTS / name), *map(str, args)], capture_output=True, text=True, timeout=600
    )


def test_gpu_check_quick_runs_every_part(tmp_path):
    done = run_script("gpu_check.py", tmp_path, "--quick")
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads((tmp_path / "gpu_check.json").read_text())
    assert json.loads(done.stdout) == doc
    assert set(doc["parts"]) == {
        "data",
        "train_m",
        "torchrun",
        "train_small",
        "convert",
        "convert_large",
        "pcnet_c",
        "maskrcnn",
    }
    assert all(part["ok"] for part in doc["parts"].values())
    assert doc["parts"]["torchrun"]["backend"] == ["gloo", "gloo"] and doc["parts"]["torchrun"]["steps"] == 3
    for model in ("paper", "small"):  # the same checkpoint on the same device: identical outputs
        same = doc["parts"]["convert"][model]["device_vs_cpu"]
        assert same["order_identical"] and same["mask_iou"] == 1.0
        large = doc["parts"]["convert_large"][model]
        assert large["images"] >= 3 and large["queries"] > 0 and 0 < large["gpu_busy_fraction"] <= 1
        assert large["projected_coco_train_min"] > 0


def test_bench_convert_host_part_is_identical_across_worker_counts():
    done = run_script("bench_convert.py", "--host", "--host-images", "6", "--host-chunk", "2", "--host-size", "32")
    assert done.returncode == 0, done.stderr[-3000:]
    host = json.loads(done.stdout)["host"]
    assert host["identical"] is True and host["queries"] > 0
    assert {"1", "2"} <= set(host["per_workers"]) and all(v > 0 for v in host["per_workers"].values())


@pytest.mark.skipif(sys.platform != "linux", reason="the CUDA-less message is checked where CI runs")
def test_gpu_check_without_cuda_says_so(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    done = run_script("gpu_check.py", tmp_path)
    assert done.returncode == 1 and "no CUDA GPU" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_table4_quick_trains_one_detector_per_label_source(tmp_path):
    done = run_script("table4.py", tmp_path, "--quick", "--arch", "mnv3-fpn")
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads((tmp_path / "table4.json").read_text())
    assert list(doc["scores"]) == ["raw", "convex-r", "pcnet", "gt-amodal"]
    assert all({"mean", "spread", "per_seed"} <= set(row["occluded_ap"]) for row in doc["scores"].values())
    assert (doc["config"]["base_lr"], doc["config"]["lr"]) == (0.02, 0.005)
    assert set(doc["label_quality_on_train"]) == {"raw", "convex-r", "pcnet"}


def load_script(name: str):
    """A script of scripts/ imported as a module, to test its functions."""
    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), SCRIPTS / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_defaults_pools_the_sets(tmp_path):
    sets = []
    for name, seed in (("one", 5), ("two", 6)):  # 2-px gaps: the shipped model's own calibration, no new one
        modal, gt = make_dataset(tmp_path / name, 6, seed, SynthOptions(width=128, height=128, gap=1))
        sets += ["--set", f"{name}={modal}:{gt}"]
    done = run_script("bench_defaults.py", "--checkpoint", "general", "--no-search", "--brief", *sets)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    rows, pooled = report["sets"], report["all"]
    assert list(rows) == ["one", "two"] and list(pooled) == ["defaults", "convex_r"]
    for label in pooled:
        assert pooled[label]["pairs"] == sum(row[label]["pairs"] for row in rows.values()) > 0
    edges = [row["defaults"]["edge_confidence"] for row in rows.values()]
    assert pooled["defaults"]["edge_confidence"]["count"] == sum(e["count"] for e in edges)
    assert pooled["defaults"]["edge_confidence"]["wrong"] == sum(e["wrong"] for e in edges)
    assert pooled["convex_r"]["edge_confidence"] is None and "samples" not in done.stdout


def test_bench_defaults_makes_the_standard_sets_once(tmp_path, monkeypatch):
    bench = load_script("bench_defaults.py")
    monkeypatch.setattr(
        bench, "STANDARD_SETS", {"clean": (2, 1, SynthOptions(64, 64)), "shapes": (2, 2, SynthOptions(64, 64))}
    )
    monkeypatch.setattr(bench, "COCOA_DEMO", tmp_path / "absent")
    assert list(bench.standard_sets(tmp_path / "a")) == ["clean"]  # no COCOA demo: no sets made of it
    monkeypatch.setattr(bench, "COCOA_DEMO", write_cocoa_like(tmp_path / "demo", images=5))
    sets = bench.standard_sets(tmp_path / "b")
    assert list(sets) == ["clean", "shapes", "cocoa"] and len(sets["cocoa"]) == 5
    made = {name: files[0][1].stat().st_mtime_ns for name, files in sets.items() if name != "cocoa"}
    assert len(read_dataset(sets["shapes"][0][1]).instances) > 0
    again = bench.standard_sets(tmp_path / "b")  # already there: kept, not made again
    assert again == sets and all(again[n][0][1].stat().st_mtime_ns == t for n, t in made.items())
