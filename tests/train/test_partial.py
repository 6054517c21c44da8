import cv2
import numpy as np
import pytest

from amodalize.config import DataConfig, load_config
from amodalize.data.bank import build_bank
from amodalize.data.formats import read_dataset
from amodalize.data.masks import Crop, dilate_square, resample
from amodalize.data.synth import SynthOptions, make_dataset
from amodalize.errors import InputError
from amodalize.train.partial import PartialCompletionSet, make_sample, split_instances

CFG = DataConfig(input_size=32, gap=0)


def bank_of(tmp_path, n=6):
    modal, _ = make_dataset(tmp_path, n, 0, SynthOptions(width=96, height=96))
    return build_bank([read_dataset(modal)], workers=1)


def test_resample_equals_cropping_then_nearest_resize():
    rng = np.random.default_rng(0)
    crop = Crop(rng.random((20, 30)) > 0.5, 5, 7)
    x0, y0, side = 0, 3, 40
    window = crop.within((x0, y0, x0 + side, y0 + side)).astype(np.uint8)
    expected = cv2.resize(window, (16, 16), interpolation=cv2.INTER_NEAREST).astype(bool)
    assert np.array_equal(resample(crop, (x0, y0, x0 + side, y0 + side), 16), expected)


def test_both_cases_follow_the_recipe(tmp_path):
    bank = bank_of(tmp_path)
    cases = set()
    for seed in range(40):
        s = make_sample(bank, 0, [1], np.random.default_rng(seed), CFG)
        modal, eraser, target = (s[k].astype(bool) for k in ("modal", "eraser", "target"))
        assert target.any() and modal.shape == (32, 32)
        if np.array_equal(modal, target) and not (eraser & target).any():
            cases.add(2)  # eraser B minus A below the target
        else:
            assert np.array_equal(modal, target & ~eraser)
            cases.add(1)  # eraser B above the target
    assert cases == {1, 2}


def test_several_erasers_each_cut_or_lie_behind_the_target(tmp_path):
    bank = bank_of(tmp_path)
    several = DataConfig(input_size=32, gap=0, erasers=3)
    counts = set()
    for seed in range(40):
        s = make_sample(bank, 0, [1, 2, 3], np.random.default_rng(seed), several)
        modal, eraser, target = (s[k].astype(bool) for k in ("modal", "eraser", "target"))
        # what is hidden of the target is hidden by the erasers; the input is never more than it
        assert not (modal & eraser).any() and not (modal & ~target).any()
        assert np.array_equal(target & ~modal, target & eraser)
        one = make_sample(bank, 0, [1], np.random.default_rng(seed), several)
        counts.add(np.count_nonzero(eraser) > np.count_nonzero(one["eraser"]))
    assert counts == {True, False}  # sometimes one eraser is drawn, sometimes more
    # with one eraser the samples are the reference recipe's, draw for draw
    single = DataConfig(input_size=32, gap=0)
    a = make_sample(bank, 0, [1, 2], np.random.default_rng(5), single)
    b = make_sample(bank, 0, [1], np.random.default_rng(5), single)
    assert all(np.array_equal(a[k], b[k]) for k in ("modal", "eraser", "target"))


def test_the_shipped_recipe_preset_draws_several_erasers_and_zero_is_refused():
    assert load_config("general").data.erasers == 3 and load_config("cpu-small").data.erasers == 1
    with pytest.raises(InputError, match="data.erasers"):
        load_config("cpu-small", ["data.erasers=0"])


def test_gap_leaves_empty_pixels_between_eraser_and_target(tmp_path):
    bank = bank_of(tmp_path)
    gapped = DataConfig(input_size=32, gap=8, eraser_front_prob=1.0)
    cut = 0
    for seed in range(20):
        plain = make_sample(
            bank, 0, [1], np.random.default_rng(seed), DataConfig(input_size=32, gap=0, eraser_front_prob=1.0)
        )
        s = make_sample(bank, 0, [1], np.random.default_rng(seed), gapped)
        modal, eraser, target = (s[k].astype(bool) for k in ("modal", "eraser", "target"))
        # the same target and eraser: only the input loses the band along the eraser
        assert np.array_equal(target, plain["target"]) and np.array_equal(eraser, plain["eraser"])
        assert not (modal & ~plain["modal"].astype(bool)).any()
        assert not (dilate_square(eraser, 1) & modal).any()  # at least 1 patch pixel apart
        cut += np.count_nonzero(plain["modal"].astype(bool) & ~modal)
    assert cut > 0
    with pytest.raises(ValueError, match="auto"):
        make_sample(bank, 0, [1], np.random.default_rng(0), DataConfig(input_size=32, gap="auto"))


def test_samples_are_a_function_of_seed_and_index(tmp_path):
    bank = bank_of(tmp_path)
    train, val = split_instances(bank, CFG, seed=0)
    assert set(train).isdisjoint(val) and len(val) >= 1
    a = PartialCompletionSet(bank, train, train, CFG, seed=3)
    b = PartialCompletionSet(bank, train, train, CFG, seed=3)
    for g in (0, 5, 1000):
        assert all(np.array_equal(a[g][k], b[g][k]) for k in ("modal", "eraser", "target"))
    assert not all(np.array_equal(a[0][k], a[1][k]) for k in ("modal", "eraser", "target"))
