import numpy as np

from amodalize.data.masks import Crop, convex_hull
from amodalize.infer.baselines import amodal_convex_r, order_area, order_convex, order_yaxis
from amodalize.infer.order import ancestors, order_from_increments
from amodalize.infer.pairs import touching_pairs


def scene():
    """A 20x20 square (index 0) behind a 10x30 bar (index 1) that covers its middle columns;
    a far-away dot (index 2) touches nothing."""
    h, w = 40, 40
    square = np.zeros((h, w), bool)
    square[10:30, 10:30] = True
    bar = np.zeros((h, w), bool)
    bar[5:35, 15:25] = True
    dot = np.zeros((h, w), bool)
    dot[0:2, 37:39] = True
    visible_square = square & ~bar
    crops = [Crop(visible_square), Crop(bar), Crop(dot)]
    return crops, square


def test_touching_pairs_skip_far_instances():
    crops, _ = scene()
    assert touching_pairs(crops) == [(0, 1)]


def test_convex_orders_and_convex_r_completes():
    crops, square = scene()
    hulls = [convex_hull(c) for c in crops]
    order, score = order_convex(crops, hulls, touching_pairs(crops))
    assert order[1, 0] == 1 and order[0, 1] == -1  # the bar occludes the square
    assert 0 < score[0, 1] <= 1
    completed = amodal_convex_r(crops, hulls, order)
    assert np.array_equal(completed[0].within((0, 0, 40, 40)), square)
    assert completed[1] is crops[1]  # nothing above the bar: unchanged


def test_area_and_yaxis():
    crops, _ = scene()
    pairs = touching_pairs(crops)
    order, _ = order_area(crops, pairs, "smaller")
    assert order[0, 1] == 1  # the visible square (200 px) is smaller than the bar (300 px): wrongly in front
    order_l, _ = order_area(crops, pairs, "larger")
    assert order_l[0, 1] == -order[0, 1]
    ys, _ = order_yaxis(crops, pairs)
    assert ys[0, 1] in (1, -1) and ys[0, 1] == -ys[1, 0]


def test_order_from_increments_rules():
    occ = np.array([[0, 5, 2], [1, 0, 2], [2, 2, 0]], float)
    order, _ = order_from_increments(occ, [(0, 1), (0, 2), (1, 2)])
    assert order[0, 1] == -1 and order[1, 0] == 1  # 0 grows more behind 1: 0 is the occludee
    assert order[0, 2] == 0 and order[1, 2] == 0  # ties give no order


def test_ancestors_follow_chains_and_survive_cycles():
    order = np.zeros((4, 4), np.int8)
    for a, b in [(1, 0), (2, 1), (0, 2), (3, 2)]:  # a occludes b; 0 <- 1 <- 2 <- 0 is a cycle
        order[a, b], order[b, a] = 1, -1
    assert ancestors(order, 0) == [1, 2, 3]
    assert ancestors(order, 3) == []


def test_cycles_are_detected():
    from amodalize.infer.order import has_cycle

    order = np.zeros((3, 3), np.int8)
    for a, b in [(0, 1), (1, 2)]:
        order[a, b], order[b, a] = 1, -1
    assert not has_cycle(order)
    order[2, 0], order[0, 2] = 1, -1
    assert has_cycle(order)
