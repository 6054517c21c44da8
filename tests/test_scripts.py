"""The prepared GPU scripts keep working: their --quick runs end to end on the CPU."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

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
    assert list(doc["ap"]) == ["raw", "convex-r", "pcnet", "gt-amodal"]
    assert set(doc["label_quality_on_train"]) == {"raw", "convex-r", "pcnet"}
