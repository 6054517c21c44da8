"""The gap estimator: known answers on drawn masks and on synth scenes with --gap."""

import numpy as np
import pytest

from amodalize.data.formats import read_dataset
from amodalize.data.gaps import MAX_GAP, boundary, estimate_gap, modal_groups, pair_profile
from amodalize.data.masks import Crop, encode_crop
from amodalize.data.synth import SynthOptions, make_dataset


def two_boxes(gap: int, size: int = 40) -> list[dict]:
    """A 20x10 box and a 20x10 box to its right with ``gap`` empty columns between them."""
    a, b = np.zeros((size, size), bool), np.zeros((size, size), bool)
    a[10:30, 2:12] = True
    b[10:30, 12 + gap : 22 + gap] = True
    return [encode_crop(Crop(m), size, size) for m in (a, b)]


def test_boundary_is_the_inner_outline():
    m = np.zeros((6, 6), bool)
    m[1:5, 1:5] = True
    edge = boundary(m)
    assert edge.sum() == 12 and not edge[2:4, 2:4].any()
    assert boundary(np.ones((3, 3), bool)).sum() == 8  # the image border counts as background


@pytest.mark.parametrize("gap", [0, 1, 3, 6])
def test_parallel_boxes_give_their_gap(gap):
    estimate = estimate_gap([two_boxes(gap)])
    assert estimate.gap == gap and estimate.pairs == 1
    # the facing columns of both boxes (20 pixels each) lie exactly `gap` apart
    assert estimate.profile[gap] == 40 and sum(estimate.profile[:gap]) == 0


def test_pair_profile_ignores_far_masks():
    a, b = (Crop(np.ones((5, 5), bool), x, 0) for x in (0, 5 + MAX_GAP + 3))
    assert not pair_profile(a, b).any()


@pytest.mark.parametrize("gap", [0, 1, 2])
def test_synth_gap_k_leaves_2k_pixels_between_neighbours(tmp_path, gap):
    modal, _ = make_dataset(tmp_path, 30, 7, SynthOptions(width=128, height=128, gap=gap))
    estimate = estimate_gap(modal_groups(read_dataset(modal)))
    assert estimate.gap == 2 * gap and estimate.pairs > 10 and estimate.images == 30


def test_cocoa_demo_masks_touch(cocoa_files):
    groups = [g for k in range(1, 6) for g in modal_groups(read_dataset(cocoa_files / f"{k}.json"))]
    assert estimate_gap(groups).gap == 0


def test_no_neighbours_means_no_gap():
    assert estimate_gap([two_boxes(0)[:1], []]).gap == 0
