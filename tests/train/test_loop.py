import json

import pytest
import torch

from amodalize.config import load_config
from amodalize.data.synth import SynthOptions, make_dataset
from amodalize.errors import InputError
from amodalize.train.engine import batches, lr_factor
from amodalize.train.loop import train, weighted_cross_entropy
from tests.conftest import invoke, torchrun

TINY = [
    "model.widen=0.25",
    "model.init=default",
    "data.input_size=32",
    "optim.optimizer=adam",
    "optim.lr=0.01",
    "optim.weight_decay=0.0",
    "optim.schedule=constant",
    "optim.batch_size=8",
    "run.workers=0",
    "run.threads=1",
    "run.val_samples=16",
    "run.val_every=0",
    "run.log_every=1",
    "run.checkpoint_every=3",
    "run.calibration_samples=0",
]


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory):
    modal, _ = make_dataset(tmp_path_factory.mktemp("synth"), 6, 0, SynthOptions(width=96, height=96))
    return modal


def tiny(iters, *extra):
    return load_config(None, [*TINY, f"optim.iters={iters}", *extra])


def test_weighted_cross_entropy_formula():
    logits = torch.tensor([[[[2.0, -1.0]], [[0.0, 1.0]]]])  # [1, 2, 1, 2]
    target = torch.tensor([[[1, 0]]])
    eraser = torch.tensor([[[1, 0]]])
    ce = torch.nn.functional.cross_entropy(logits, target, reduction="none")[0, 0]
    expected = (5 * ce[0] + ce[1]) / 2
    assert torch.isclose(weighted_cross_entropy(logits, target, eraser, 5.0), expected)


def test_schedules():
    cfg = load_config(None, ["optim.milestones=[2, 4]", "optim.iters=6"])
    assert [round(lr_factor(cfg, s), 6) for s in range(6)] == [1, 1, 0.1, 0.1, 0.01, 0.01]
    cos = load_config(None, ["optim.schedule=cosine", "optim.iters=4"])
    assert lr_factor(cos, 0) == 1 and lr_factor(cos, 4) == pytest.approx(0) and lr_factor(cos, 2) == pytest.approx(0.5)


@pytest.mark.slow
def test_loss_decreases_and_files_are_written(tmp_path, synth_data):
    run = tmp_path / "run"
    metrics = train(tiny(40), [synth_data], run, device="cpu")
    losses = [r["loss"] for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if "loss" in r]
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    assert set(metrics) >= {"iou", "raw_iou", "eraser_iou", "bg_prob"}
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "checkpoint.pt", "log.jsonl", "val_grid.png"}
    assert load_config(run / "config.yaml").optim.iters == 40


@pytest.mark.slow
def test_checkpoint_records_how_it_takes_categories_and_which_it_saw(tmp_path):
    """New runs ignore category ids; a run told to multiply by them (the reference's way) records
    the ids it saw, and convert names those of an input it never saw."""
    coco, _ = make_dataset(tmp_path / "coco", 6, 0, SynthOptions(width=96, height=96, categories="coco"))
    seen = sorted({a["category_id"] for a in json.loads(coco.read_text())["annotations"]})
    train(tiny(2), [coco], tmp_path / "none", device="cpu")
    ckpt = torch.load(tmp_path / "none" / "checkpoint.pt", weights_only=True)
    assert ckpt["config"]["model"]["categories"] == "none" and ckpt["categories_seen"] == seen
    train(tiny(2, "model.categories=multiply"), [coco], tmp_path / "multiply", device="cpu")
    other, _ = make_dataset(tmp_path / "zero", 6, 0, SynthOptions(width=96, height=96, categories="zero-based"))
    unseen = sorted({a["category_id"] for a in json.loads(other.read_text())["annotations"]} - set(seen))
    for run, warned in (("none", False), ("multiply", True)):
        args = ["convert", other, tmp_path / f"{run}.json", "--checkpoint", tmp_path / run / "checkpoint.pt"]
        result = invoke([*args, "--amodal-th", "0.5", "--order-th", "0.5"])
        line = f"never saw these ids in training: {', '.join(map(str, unseen))}"
        assert (line in " ".join(result.stderr.split())) == warned
    with pytest.raises(InputError, match="model.categories"):
        tiny(1, "model.categories=embed")


@pytest.mark.slow
def test_interrupt_then_resume_is_bit_for_bit(tmp_path, synth_data):
    train(tiny(6), [synth_data], tmp_path / "a", device="cpu")

    def stop_at_4(record):
        if record["step"] == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tiny(6), [synth_data], tmp_path / "b", device="cpu", on_step=stop_at_4)
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)["step"] == 4
    train(tiny(6), [synth_data], tmp_path / "b", device="cpu", resume=True)
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)
    assert a["step"] == b["step"] == 6
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    records = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == sorted(steps) and steps.count(4) == 1
    assert [r["step"] for r in records if "env" in r] == [0, 4]  # where each part of the run executed


@pytest.mark.slow
def test_resume_refuses_other_data_or_shape(tmp_path, synth_data):
    run = tmp_path / "run"
    train(tiny(3), [synth_data], run, device="cpu")
    with pytest.raises(InputError, match="already holds a checkpoint"):
        train(tiny(3), [synth_data], run, device="cpu")
    with pytest.raises(InputError, match="model.widen"):
        train(tiny(6, "model.widen=0.5"), [synth_data], run, device="cpu", resume=True)
    other, _ = make_dataset(tmp_path / "other", 3, 9, SynthOptions(width=96, height=96))
    with pytest.raises(InputError, match="different data"):
        train(tiny(6), [other], run, device="cpu", resume=True)


@pytest.mark.slow
def test_cli_trains_on_cocoa_demo(tmp_path, cocoa_files):
    files = [cocoa_files / f"{k}.json" for k in range(1, 6)]
    args = ["train", *files, "--out", tmp_path / "run", "--iters", "4", "--device", "cpu"]
    for item in TINY:
        args += ["--set", item]
    result = invoke(args)
    assert "validation: IoU" in result.stderr
    assert (tmp_path / "run" / "checkpoint.pt").exists()
    bad = invoke(["train", files[0], "--out", tmp_path / "x", "--set", "optim.lr=fast"], exit_code=2)
    assert "optim.lr must be float" in bad.stderr


@pytest.mark.slow
def test_without_config_a_cpu_run_fine_tunes_the_shipped_model_unless_told_not_to(tmp_path, synth_data):
    quick = ["--device", "cpu", "--set", "run.val_samples=8", "--set", "run.calibration_samples=8"]
    for item in ("run.workers=0", "run.threads=1", "optim.batch_size=8"):
        quick += ["--set", item]
    tuned = invoke(["train", synth_data, "--out", tmp_path / "tuned", "--iters", "2", *quick])
    assert "fine-tuning the shipped model 'general' for 2 steps" in tuned.stderr
    ckpt = torch.load(tmp_path / "tuned" / "checkpoint.pt", weights_only=False)
    assert ckpt["init"]["shipped_model"] == "general" and ckpt["step"] == 2
    default_steps = load_config(tmp_path / "tuned" / "config.yaml").optim.iters
    scratch = invoke(["train", synth_data, "--out", tmp_path / "scratch", "--iters", "2", "--init", "none", *quick])
    assert "1,400 steps" in scratch.stderr and "fine-tuning" not in scratch.stderr
    assert torch.load(tmp_path / "scratch" / "checkpoint.pt", weights_only=False).get("init") is None
    assert default_steps == 2  # --iters wins over the fine-tuning length


@pytest.mark.slow
def test_torchrun_two_processes_then_resume_in_one(tmp_path, synth_data):
    run = tmp_path / "ddp"
    args = ["train", synth_data, "--out", run, "--iters", "3", "--device", "cpu"]
    for item in TINY:
        args += ["--set", item]
    torchrun(args)
    ckpt = torch.load(run / "checkpoint.pt", weights_only=False)
    assert ckpt["step"] == 3 and not any(k.startswith("module.") for k in ckpt["model"])
    train(tiny(5), [synth_data], run, device="cpu", resume=True)
    assert torch.load(run / "checkpoint.pt", weights_only=False)["step"] == 5


class _BadImages(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, k):
        raise InputError(f"images/{k}.png", "cannot be read as an image")


def test_an_input_error_in_a_worker_comes_back_as_one_line():
    loader = torch.utils.data.DataLoader(_BadImages(), num_workers=1)
    with pytest.raises(InputError) as caught:
        list(batches(loader))
    assert str(caught.value) == "images/0.png: cannot be read as an image"
    plain = torch.utils.data.DataLoader(list(range(3)), batch_size=2)
    assert [b.tolist() for b in batches(plain)] == [[0, 1], [2]]


@pytest.mark.slow
def test_init_starts_from_given_weights_and_refuses_other_shapes(tmp_path, synth_data):
    train(tiny(3), [synth_data], tmp_path / "a", device="cpu")
    first = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    train(tiny(1, "optim.lr=0.0"), [synth_data], tmp_path / "b", device="cpu", init=tmp_path / "a" / "checkpoint.pt")
    second = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert second["init"]["path"] == str(tmp_path / "a" / "checkpoint.pt") and second["init"]["shipped_model"] is None
    for k, v in first["model"].items():  # lr 0: the weights stay what --init gave (BN statistics move)
        if "running" not in k and "num_batches" not in k:
            assert torch.equal(v, second["model"][k]), k
    with pytest.raises(InputError, match="widen"):
        train(
            tiny(1, "model.widen=0.5"),
            [synth_data],
            tmp_path / "c",
            device="cpu",
            init=tmp_path / "a" / "checkpoint.pt",
        )
    with pytest.raises(InputError, match="input size"):
        train(
            tiny(1, "data.input_size=48"),
            [synth_data],
            tmp_path / "d",
            device="cpu",
            init=tmp_path / "a" / "checkpoint.pt",
        )
    with pytest.raises(InputError, match="not a shipped model"):
        train(tiny(1), [synth_data], tmp_path / "e", device="cpu", init="no-such-model")
