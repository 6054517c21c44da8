import numpy as np
import torch

from amodalize.infer.batcher import Painter
from amodalize.models.pcnet_c import PConvUNet


def test_painter_keeps_valid_pixels_and_batching_changes_nothing():
    torch.manual_seed(0)
    generator = PConvUNet(base=8, depth=3, max_width=16)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    hole = np.zeros((5, 32, 32), np.uint8)
    hole[:, 10:20, 8:24] = 1
    visible = np.ones_like(hole) - hole
    category = np.ones(5, np.float32)
    one = Painter(generator, device=torch.device("cpu"), batch_size=1)(rgb, hole, visible, category)
    many = Painter(generator, device=torch.device("cpu"), batch_size=4)(rgb, hole, visible, category)
    assert one.shape == rgb.shape and one.dtype == np.uint8
    assert np.abs(one.astype(int) - many.astype(int)).max() <= 1  # float summation order only
    keep = ~hole.astype(bool)
    assert np.abs(one[keep].astype(int) - rgb[keep]).max() <= 1  # normalise/denormalise rounding
    assert np.any(one[hole.astype(bool)] != rgb[hole.astype(bool)])
