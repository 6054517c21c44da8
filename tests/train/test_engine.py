"""The training engine the three trainers share: the step loop, one checkpoint layout, resume."""

import json

import pytest
import torch

from amodalize.errors import InputError
from amodalize.train.engine import Schedule, read_checkpoint, restore_checkpoint, run_steps, save_checkpoint


def _parts(seed):
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return {"model": model, "optimizer": optimizer}


def _fit(parts, run_dir, start, iters, stop_at=None):
    """A few steps of a linear model on batches made from the step number (the same on resume)."""
    model, optimizer = parts["model"], parts["optimizer"]

    def step_fn(batch, step):
        if step == stop_at:
            raise KeyboardInterrupt
        loss = (model(batch) + torch.randn(batch.shape[0], 2) * 0.01).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return {"loss": loss.item()}

    batches = (torch.full((4, 3), float(s)) for s in range(start, iters))
    ckpt = run_dir / "checkpoint.pt"
    saved = []

    def checkpoint(at):
        saved.append(at)
        save_checkpoint(ckpt, "pcnet-m", at, parts, config={"note": "made"})

    schedule = Schedule(iters, 4, log_every=1, checkpoint_every=3)
    return run_steps(batches, start, step_fn, schedule, run_dir, True, None, checkpoint), saved


def test_interrupted_run_resumes_to_the_same_weights(tmp_path):
    whole = _parts(0)
    (tmp_path / "a").mkdir()
    (step, last), saved = _fit(whole, tmp_path / "a", 0, 7)
    assert step == 7 and saved == [3, 6, 7] and set(last) >= {"step", "loss", "samples_per_s"}
    cut = _parts(0)
    (tmp_path / "b").mkdir()
    with pytest.raises(KeyboardInterrupt):
        _fit(cut, tmp_path / "b", 0, 7, stop_at=5)
    ckpt = read_checkpoint(tmp_path / "b" / "checkpoint.pt", "pcnet-m")
    assert ckpt["kind"] == "pcnet-m" and ckpt["step"] == 5 and ckpt["config"] == {"note": "made"}
    again = _parts(1)  # other weights: all of them must come from the checkpoint
    start = restore_checkpoint(ckpt, again)
    _fit(again, tmp_path / "b", start, 7)
    for a, b in zip(whole["model"].parameters(), again["model"].parameters()):
        assert torch.equal(a, b)
    logged = [json.loads(line)["step"] for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert logged == list(range(1, 8))


def test_checkpoints_of_before_kind_and_rng_still_load(tmp_path):
    parts = _parts(0)
    path = tmp_path / "checkpoint.pt"
    old = {name: part.state_dict() for name, part in parts.items()}
    torch.save({**old, "step": 4, "config": {}}, path)  # a PCNet-M checkpoint as written before
    fresh = _parts(2)
    assert restore_checkpoint(read_checkpoint(path, "pcnet-m"), fresh) == 4
    assert torch.equal(fresh["model"].weight, parts["model"].weight)
    torch.save({**old, "step": 2, "config": {}, "labels": {"1": 1}}, path)  # Mask R-CNN's
    assert read_checkpoint(path, "maskrcnn")["step"] == 2
    with pytest.raises(InputError, match="is a Mask R-CNN checkpoint, not a PCNet-M one"):
        read_checkpoint(path, "pcnet-m")
    save_checkpoint(path, "pcnet-c", 1, parts)
    with pytest.raises(
        InputError, match="is a PCNet-C checkpoint, not a PCNet-M one; resume it with `amodalize train --model pcnet-c`"
    ):
        read_checkpoint(path, "pcnet-m")
