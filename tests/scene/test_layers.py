import numpy as np

from amodalize.data.images import crop_image, uncrop_image
from amodalize.data.masks import Crop, encode_crop, place
from amodalize.scene.layers import Layer, paint_order
from amodalize.scene.recompose import Edits, compose, edited_order, modal_baseline


def test_paint_order_puts_occluders_after_what_they_hide():
    order, cyclic = paint_order([1, 2, 3, 4], {1: [2], 2: [3], 4: []})
    assert order.index(1) < order.index(2) < order.index(3) and not cyclic
    # 1 and 2 hide each other: the rule paints the one occluding fewer unpainted objects first
    order, cyclic = paint_order([1, 2, 3], {1: [2], 2: [1, 3], 3: []})
    assert cyclic and order == [1, 2, 3]  # all tie at one; 3 hides 2 so it still comes after it
    order, cyclic = paint_order([5, 6], {5: [6], 6: [5]})
    assert cyclic and order == [5, 6]  # a tie goes to the lower id


def test_place_and_crop_round_trips():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    window = (10, 5, 30, 25)
    assert np.array_equal(place(image, (0, 0, 60, 40), window), image[5:25, 10:30])
    assert np.array_equal(crop_image(image, window, 20), image[5:25, 10:30])
    back, clipped = uncrop_image(image[5:25, 10:30], window, 40, 60)
    assert clipped == window and np.array_equal(back, image[5:25, 10:30])
    outside = crop_image(image, (-10, -10, 10, 10), 20)  # zero where the window leaves the image
    assert not outside[:10].any() and np.array_equal(outside[10:, 10:], image[:10, :10])
    part, clipped = uncrop_image(outside, (-10, -10, 10, 10), 40, 60)
    assert clipped == (0, 0, 10, 10) and np.array_equal(part, image[:10, :10])


def _square(colour, x0, y0, side=10):
    rgba = np.zeros((side, side, 4), np.uint8)
    rgba[..., :3] = colour
    rgba[..., 3] = 255
    return Layer(rgba, x0, y0)


def test_compose_follows_the_edited_order():
    background = np.zeros((40, 40, 3), np.uint8)
    layers = {1: _square((255, 0, 0), 5, 5), 2: _square((0, 255, 0), 10, 10)}
    scene = compose(background, layers, [1, 2], {})
    assert tuple(scene[12, 12]) == (0, 255, 0) and tuple(scene[6, 6]) == (255, 0, 0)
    assert tuple(compose(background, layers, edited_order([1, 2], Edits(swap=[(1, 2)])), {})[12, 12]) == (255, 0, 0)
    assert tuple(compose(background, layers, edited_order([1, 2], Edits(to_front=[1])), {})[12, 12]) == (255, 0, 0)
    deleted = compose(background, layers, edited_order([1, 2], Edits(delete=[2])), {})
    assert tuple(deleted[12, 12]) == (255, 0, 0) and tuple(deleted[18, 18]) == (0, 0, 0)
    moved = compose(background, layers, [1, 2], {1: (28, 0)})  # partly off the canvas
    assert tuple(moved[6, 6]) == (0, 0, 0) and tuple(moved[6, 34]) == (255, 0, 0)


def test_modal_baseline_inpaints_what_an_edit_vacates():
    image = np.full((40, 40, 3), 200, np.uint8)
    image[10:20, 10:20] = (255, 0, 0)
    visible = np.zeros((40, 40), bool)
    visible[10:20, 10:20] = True
    doc = {"objects": [{"id": 7, "visible_mask": encode_crop(Crop(visible), 40, 40)}]}
    deleted = modal_baseline(image, doc, Edits(delete=[7]))
    assert np.abs(deleted[12:18, 12:18].astype(int) - 200).max() < 20  # filled from the grey around it
    shifted = modal_baseline(image, doc, Edits(shift={7: (15, 0)}))
    assert tuple(shifted[15, 30]) == (255, 0, 0) and tuple(shifted[15, 12]) != (255, 0, 0)
