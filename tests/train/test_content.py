import json
import shutil

import cv2
import numpy as np
import pytest
import torch

from amodalize.config import ContentConfig, load_config
from amodalize.data.bank import build_bank, sample_window
from amodalize.data.formats import read_dataset
from amodalize.data.images import ImageCache, crop_image
from amodalize.data.masks import resample
from amodalize.data.synth import SynthOptions, make_dataset
from amodalize.errors import InputError
from amodalize.models.pcnet_c import VGG16Features, load_pcnet_c
from amodalize.train.content import (
    build_networks,
    discriminator_loss,
    generator_losses,
    train_content,
    validate_content,
)
from amodalize.train.partial import make_content_sample, validation_samples
from tests.conftest import invoke, torchrun

TINY = [
    "model.base=8",
    "model.depth=3",
    "model.max_width=32",
    "model.disc_base=8",
    "data.input_size=32",
    "optim.lr=0.002",
    "optim.d_lr=0.0002",
    "optim.batch_size=4",
    "run.workers=0",
    "run.threads=1",
    "run.val_samples=16",
    "run.val_every=0",
    "run.log_every=1",
    "run.checkpoint_every=3",
]


def tiny(iters, *extra):
    return load_config(None, [*TINY, f"optim.iters={iters}", *extra], ContentConfig)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rendered")
    modal, _ = make_dataset(folder, 6, 0, SynthOptions(width=96, height=96, render=True))
    return modal, folder / "images"


def test_content_sample_blanks_the_overlap_of_target_and_eraser(rendered):
    modal, images_dir = rendered
    bank = build_bank([read_dataset(modal)], workers=1)
    cfg = tiny(1).data
    images = ImageCache(images_dir)
    for seed in range(5):
        s = make_content_sample(bank, images, 0, 3, np.random.default_rng(seed), cfg)
        window, flip = sample_window(bank, 0, np.random.default_rng(seed), cfg, shift=True)
        target = resample(bank.crop(0), window, cfg.input_size)
        rgb = crop_image(images(bank.image_files[bank.image_index[0]]), window, cfg.input_size)[..., ::-1]
        assert tuple(bank.image_sizes[bank.image_index[0]]) == images(bank.image_files[bank.image_index[0]]).shape[:2]
        if flip:
            target, rgb = target[:, ::-1], rgb[:, ::-1]
        assert s["rgb"].shape == (3, 32, 32) and s["rgb"].dtype == np.uint8
        assert np.array_equal(s["rgb"].transpose(1, 2, 0), rgb)  # the target's own crop, RGB order
        assert not np.any(s["hole"] & s["modal"])
        assert np.array_equal((s["hole"] | s["modal"]).astype(bool), target)  # hole = A ∩ B, modal = A \ B


def test_generator_and_discriminator_losses():
    image = torch.randn(2, 3, 8, 8)
    valid = torch.ones(2, 1, 8, 8)
    valid[..., 2:5, 2:5] = 0
    weights = tiny(1).loss
    confident = torch.full((2, 1, 2, 2), 20.0)
    perfect = generator_losses(image, image, valid, confident, weights)
    assert perfect["hole"] == 0 and perfect["valid"] == 0 and perfect["adversarial"] < 1e-6
    off = generator_losses(image + 1, image, valid, confident, weights)
    assert off["hole"] == pytest.approx(6.0 * 9 / 64) and off["valid"] == pytest.approx(55 / 64)
    with_vgg = generator_losses(image + 1, image, valid, confident, weights, VGG16Features())
    assert with_vgg["perceptual"] > 0 and with_vgg["style"] > 0
    assert discriminator_loss(confident, -confident) < 1e-6 < discriminator_loss(-confident, confident)


def test_training_beats_its_start_and_writes_the_run(tmp_path, rendered):
    modal, images_dir = rendered
    cfg = tiny(40)
    run = tmp_path / "run"
    metrics = train_content(cfg, [modal], images_dir, run, device="cpu")
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "checkpoint.pt", "log.jsonl", "val_grid.png"}
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    holes = [r["loss_hole"] for r in records if "loss_hole" in r]
    assert len(holes) == 40 and np.mean(holes[-10:]) < np.mean(holes[:5])
    generator, size, categories = load_pcnet_c(run / "checkpoint.pt")
    assert size == 32 and categories == "none"
    bank = build_bank([read_dataset(modal)], workers=1)
    everyone = np.arange(len(bank))
    batch = validation_samples(bank, everyone, everyone, cfg.data, 0, 16, ImageCache(images_dir))
    fresh = build_networks(cfg)[0]
    assert metrics["hole_l1"] < validate_content(fresh, batch, torch.device("cpu"))["hole_l1"]
    assert metrics["hole_pixels"] > 0 and metrics["mean_fill_l1"] > 0 and metrics["inpaint_l1"] > 0


def test_interrupt_then_resume_is_bit_for_bit(tmp_path, rendered):
    modal, images_dir = rendered
    train_content(tiny(6), [modal], images_dir, tmp_path / "a", device="cpu")

    def stop_at_4(record):
        if record["step"] == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_content(tiny(6), [modal], images_dir, tmp_path / "b", device="cpu", on_step=stop_at_4)
    train_content(tiny(6), [modal], images_dir, tmp_path / "b", device="cpu", resume=True)
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert a["step"] == b["step"] == 6
    for part in ("generator", "discriminator"):
        for k, v in a[part].items():
            assert torch.equal(v, b[part][k]), (part, k)
    with pytest.raises(InputError, match="model.base"):
        train_content(tiny(8, "model.base=16"), [modal], images_dir, tmp_path / "b", device="cpu", resume=True)


@pytest.mark.slow
def test_cli_trains_pcnet_c_with_perceptual_weights(tmp_path, rendered):
    modal, images_dir = rendered
    torch.save(VGG16Features().state_dict(), tmp_path / "vgg16.pth")
    args = ["train", "--model", "pcnet-c", modal, "--images-dir", images_dir, "--out", tmp_path / "run"]
    args += ["--iters", "2", "--device", "cpu", "--perceptual-weights", tmp_path / "vgg16.pth"]
    for item in TINY:
        args += ["--set", item]
    result = invoke(args)
    assert "OpenCV inpainting" in result.stderr
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert records[0]["env"]["device"] == "cpu" and records[0]["env"]["processes"] == 1
    first = next(r for r in records if "loss" in r)
    assert first["loss_perceptual"] > 0 and first["loss_style"] > 0
    assert "needs --images-dir" in invoke(["train", "--model", "pcnet-c", modal, "--out", tmp_path / "x"], 2).stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = invoke(["train", "--model", "pcnet-c", modal, "--images-dir", empty, "--out", tmp_path / "y"], 2)
    assert "image file(s) missing" in missing.stderr
    # a PCNet-M run cannot be resumed as PCNet-C and the other way round
    wrong = invoke(["train", modal, "--out", tmp_path / "run", "--resume", "--device", "cpu"], 2)
    assert "PCNet-C checkpoint" in wrong.stderr


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path, rendered):
    modal, images_dir = rendered
    run = tmp_path / "ddp"
    args = ["train", "--model", "pcnet-c", modal, "--images-dir", images_dir, "--out", run, "--iters", "2"]
    args += ["--device", "cpu"]
    for item in TINY:
        args += ["--set", item]
    torchrun(args)
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 2 and not any(k.startswith("module.") for k in ckpt["generator"])
    train_content(tiny(3), [modal], images_dir, run, device="cpu", resume=True)
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 3


def test_a_wrong_size_image_found_by_a_worker_is_one_clear_error(tmp_path, rendered):
    modal, images_dir = rendered
    copy = tmp_path / "images"
    shutil.copytree(images_dir, copy)
    for path in copy.iterdir():  # every image, so the first batch meets one
        cv2.imwrite(str(path), np.zeros((50, 70, 3), np.uint8))
    with pytest.raises(InputError, match="is 70x50 pixels, the annotations say 96x96"):
        train_content(tiny(2, "run.workers=1"), [modal], copy, tmp_path / "run", device="cpu")
