"""Shared fixtures: COCOA files (made, and the real demo files beside the project), and a CLI runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from amodalize.cli import cli
from tests.cocoa_like import write_cocoa_like

# The 5 real COCOA images beside the checkout (../shared/data/cocoa-demo), or where
# AMODALIZE_COCOA_DEMO points. Where they are absent, the tests that read them skip; what they
# cover is also covered on data the tests make.
COCOA_DEMO = Path(
    os.environ.get("AMODALIZE_COCOA_DEMO") or Path(__file__).resolve().parents[2] / "shared" / "data" / "cocoa-demo"
)


@pytest.fixture(scope="session", params=["made", "demo"])
def cocoa_files(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of 5 per-image COCOA files 1.json..5.json with their images beside: made from synth
    scenes (always), and the real COCOA demo (where it is found)."""
    if request.param == "made":
        return write_cocoa_like(tmp_path_factory.mktemp("cocoa-like"), images=5)
    if not (COCOA_DEMO / "1.json").is_file():
        pytest.skip(f"COCOA demo data not found at {COCOA_DEMO} (set AMODALIZE_COCOA_DEMO to its folder)")
    return COCOA_DEMO


def regions(path: Path) -> int:
    """Regions (instances) in a per-image COCOA file."""
    return len(json.loads(path.read_text())["regions"])


def invoke(args: list[str], exit_code: int = 0):
    """Run the CLI in-process; fail with its output when the exit code differs."""
    result = CliRunner().invoke(cli, [str(a) for a in args])
    output = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}\n{result.exception!r}"
    assert result.exit_code == exit_code, f"exit {result.exit_code} != {exit_code}\n{output}"
    return result


def torchrun(args: list, nproc: int = 2) -> subprocess.CompletedProcess:
    """Run ``python -m amodalize ARGS`` under torchrun with ``nproc`` CPU processes (gloo)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    command += ["-m", "amodalize", *map(str, args)]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done
