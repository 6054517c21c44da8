"""The instance bank and eraser placement shared by training samples and calibration scenes."""

import numpy as np

from amodalize.config import DataConfig
from amodalize.data.bank import build_bank, place_eraser, translate
from amodalize.data.formats import read_dataset
from amodalize.data.synth import SynthOptions, make_dataset

CFG = DataConfig(input_size=32, gap=0)


def test_translate():
    m = np.zeros((4, 4), bool)
    m[1, 1] = True
    assert translate(m, 1, 0)[1, 0] and translate(m, -1, -1)[2, 2]
    assert not translate(m, 5, 0).any()


def test_eraser_cuts_an_accepted_fraction():
    rng = np.random.default_rng(1)
    target = np.zeros((32, 32), bool)
    target[8:24, 8:24] = True
    eraser = np.zeros((32, 32), bool)
    eraser[4:28, 10:20] = True
    for _ in range(20):
        placed = place_eraser(eraser, target, rng, CFG)
        cut = np.count_nonzero(placed & target) / np.count_nonzero(target)
        assert CFG.min_cut_ratio <= cut < CFG.max_cut_ratio


def test_bank_skips_crowd_and_empty(tmp_path):
    modal, _ = make_dataset(tmp_path, 3, 0, SynthOptions(width=64, height=64))
    ds = read_dataset(modal)
    n = len(ds.instances)
    ds.instances[0].iscrowd = True
    bank = build_bank([ds], workers=1)
    assert len(bank) == n - 1
    assert bank.crop(0).area == np.count_nonzero(bank.crop(0).mask) > 0
