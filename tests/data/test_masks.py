import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from amodalize.data.masks import (
    EMPTY,
    Crop,
    box_union,
    completion_window,
    compressed_counts,
    convex_hull,
    decode_crop,
    dilate_square,
    encode_crop,
    resample,
    resample_cover,
    resample_linear,
    rle_area,
    rle_bbox,
    rle_iou,
    rle_minus,
    square_window,
    tight,
    to_rle,
    touching,
)
from amodalize.errors import FormatError


def full(mask_crop: Crop, h: int, w: int) -> np.ndarray:
    return mask_crop.within((0, 0, w, h))


class TestToRle:
    def test_polygon_and_flat_polygon_agree(self):
        poly = [2.0, 2.0, 12.0, 2.0, 12.0, 8.0, 2.0, 8.0]
        a, b = to_rle([poly], 20, 30), to_rle(poly, 20, 30)
        assert a == b
        assert isinstance(a["counts"], str) and a["size"] == [20, 30]
        assert rle_bbox(a) == [2.0, 2.0, 10.0, 6.0]  # pycocotools covers [2, 12) x [2, 8)

    def test_multi_polygon_is_merged(self):
        left = [0, 0, 4, 0, 4, 4, 0, 4]
        right = [10, 0, 14, 0, 14, 4, 10, 4]
        both = to_rle([left, right], 10, 20)
        assert rle_area(both) == rle_area(to_rle([left], 10, 20)) + rle_area(to_rle([right], 10, 20))

    def test_uncompressed_and_compressed_rle_round_trip(self):
        mask = np.zeros((6, 5), np.uint8, order="F")
        mask[1:4, 2:5] = 1
        compressed = mask_utils.encode(mask)
        counts = []  # uncompressed: column-major runs starting with zeros
        flat, value, run = mask.flatten(order="F"), 0, 0
        for v in flat:
            if v == value:
                run += 1
            else:
                counts.append(run)
                value, run = v, 1
        counts.append(run)
        a = to_rle({"size": [6, 5], "counts": counts}, 6, 5)
        b = to_rle({"size": [6, 5], "counts": compressed["counts"].decode()}, 6, 5)
        assert a == b
        assert np.array_equal(full(decode_crop(a), 6, 5), mask.astype(bool))

    @pytest.mark.parametrize(
        "seg, message",
        [
            ([[1, 1, 5, 5]], "2 points"),
            ({"size": [9, 9], "counts": "abc"}, "RLE size"),
            ("not a mask", "neither polygons nor RLE"),
            ({"size": [6, 5], "counts": [3, 4]}, "do not add up"),
        ],
    )
    def test_bad_segmentations(self, seg, message):
        with pytest.raises(FormatError, match=message):
            to_rle(seg, 6, 5)

    def test_an_empty_polygon_list_is_an_empty_mask(self):
        """Box-only annotations (CVAT, Roboflow) carry ``"segmentation": []``."""
        rle = to_rle([], 6, 5)
        assert rle_area(rle) == 0 and rle == encode_crop(EMPTY, 6, 5) and rle["size"] == [6, 5]


def test_box_union_holds_both_boxes():
    assert box_union([1, 2, 3, 4], [0.5, 3, 10, 1]) == [0.5, 2, 10.0, 4]
    assert box_union([1, 2, 3, 4], [2, 3, 1, 1]) == [1, 2, 3, 4]


class TestCrops:
    def test_decode_encode_round_trip_and_tight_window(self):
        rle = to_rle([[3, 4, 9, 4, 9, 9, 3, 9]], 16, 16)
        crop = decode_crop(rle)
        assert crop.window == (3, 4, 9, 9)
        assert encode_crop(crop, 16, 16) == rle

    def test_empty(self):
        rle = encode_crop(EMPTY, 8, 8)
        assert decode_crop(rle) is EMPTY and rle_area(rle) == 0
        assert tight(np.zeros((4, 4), bool)) is EMPTY

    def test_within_pads_and_clips(self):
        crop = Crop(np.ones((2, 2), bool), 1, 1)
        out = crop.within((0, 0, 2, 2))
        assert out.tolist() == [[False, False], [False, True]]

    def test_minus(self):
        a = to_rle([[0, 0, 9, 0, 9, 9, 0, 9]], 10, 10)
        b = encode_crop(Crop(np.ones((10, 5), bool), 0, 0), 10, 10)
        assert rle_area(a) == 81  # the polygon covers pixels 0..8 in both directions
        assert rle_area(rle_minus(a, b)) == 4 * 9  # columns 5..8 remain


def square(x0: int, y0: int, size: int = 3) -> Crop:
    return Crop(np.ones((size, size), bool), x0, y0)


class TestTouching:
    def test_side_neighbours_touch(self):
        assert touching(square(0, 0), square(3, 0))

    def test_diagonal_neighbours_do_not_touch_under_the_cross(self):
        assert not touching(square(0, 0), square(3, 3))

    def test_one_pixel_gap(self):
        assert not touching(square(0, 0), square(4, 0))

    def test_overlap_and_symmetry(self):
        a, b = square(0, 0, 5), square(2, 2)
        assert touching(a, b) and touching(b, a)


def test_convex_hull_fills_an_l_shape():
    mask = np.zeros((10, 10), bool)
    mask[:, :3] = True
    mask[7:, :] = True
    hull = convex_hull(Crop(mask, 5, 5))
    assert hull.window == (5, 5, 15, 15)
    assert hull.mask[mask].all()
    assert hull.mask[4, 5] and not hull.mask[0, 9]


def test_resample_cover_keeps_thin_parts():
    mask = np.zeros((100, 100), bool)
    mask[37, 5:95] = True  # a 1-px line that nearest resizing to 10 px drops
    assert not resample(Crop(mask), (0, 0, 100, 100), 10).any()
    cover = resample_cover(mask, 10)
    assert cover[3, 1:9].all() and cover.sum() == cover[3].sum()
    small = np.zeros((4, 4), bool)
    small[1, 1] = True
    assert resample_cover(small, 16)[4:8, 4:8].all()  # enlarging keeps the pixel's whole cell


def test_resample_is_cv2_nearest_resize_of_the_zero_padded_window():
    """Windows inside, across and wholly outside the crop, shrunk and enlarged."""
    rng = np.random.default_rng(7)
    for _ in range(60):
        h, w = rng.integers(1, 40, 2)
        crop = Crop(rng.random((h, w)) > 0.5, int(rng.integers(-10, 30)), int(rng.integers(-10, 30)))
        side, x0, y0 = int(rng.integers(1, 90)), int(rng.integers(-40, 60)), int(rng.integers(-40, 60))
        window = (x0, y0, x0 + side, y0 + side)
        for out in (16, 64):
            padded = crop.within(window).astype(np.uint8)
            expected = cv2.resize(padded, (out, out), interpolation=cv2.INTER_NEAREST) > 0
            assert np.array_equal(resample(crop, window, out), expected)


def test_resample_of_a_rectangular_window_is_cv2_nearest_resize_to_a_square():
    """Completion windows of elongated objects are not square: each axis is resized on its own."""
    rng = np.random.default_rng(11)
    for _ in range(40):
        h, w = rng.integers(1, 40, 2)
        crop = Crop(rng.random((h, w)) > 0.5, int(rng.integers(-10, 30)), int(rng.integers(-10, 30)))
        x0, y0 = int(rng.integers(-40, 60)), int(rng.integers(-40, 60))
        window = (x0, y0, x0 + int(rng.integers(1, 120)), y0 + int(rng.integers(1, 30)))
        padded = crop.within(window).astype(np.uint8)
        expected = cv2.resize(padded, (16, 16), interpolation=cv2.INTER_NEAREST) > 0
        assert np.array_equal(resample(crop, window, 16), expected)


def test_completion_window_narrows_elongated_boxes_across_their_length():
    for box in ((10, 20, 300, 20), (40, 5, 20, 300)):
        square = square_window(box)
        assert completion_window(box, max_aspect=0) == square
        x0, y0, x1, y1 = completion_window(box, max_aspect=2.5)
        long_side, across = (x1 - x0, y1 - y0) if box[2] > box[3] else (y1 - y0, x1 - x0)
        assert long_side == square[2] - square[0]  # along the object: the square window's side
        assert across == int(long_side * 2.5 * 20 / 300)
        # the box fills the window as a 2.5:1 box fills a square one
        assert max(box[2], box[3]) / long_side / (min(box[2], box[3]) / across) == pytest.approx(2.5, rel=0.05)
        centre = (box[0] + box[2] / 2, box[1] + box[3] / 2)
        assert abs((x0 + x1) / 2 - centre[0]) <= 1 and abs((y0 + y1) / 2 - centre[1]) <= 1
    for box in ((0, 0, 50, 20), (0, 0, 20, 20)):  # at most 2.5 times as long as wide: square
        assert completion_window(box, max_aspect=2.5) == square_window(box)


def test_dilate_square_grows_rows_and_columns_by_their_own_amounts():
    mask = np.zeros((9, 9), bool)
    mask[4, 4] = True
    grown = dilate_square(mask, 1, 3)
    assert np.array_equal(np.argwhere(grown).min(0), [1, 3]) and np.array_equal(np.argwhere(grown).max(0), [7, 5])
    assert np.array_equal(dilate_square(mask, 2, None), dilate_square(mask, 2, 2))


def test_resample_linear_is_the_reference_bilinear_crop_resize():
    """The reference crops the full-image mask to the square window with zero padding, resizes the
    0/1 floats bilinearly and keeps > 0.5 (its completion inputs)."""
    rng = np.random.default_rng(3)
    full = np.zeros((50, 60), bool)
    full[10:40, 15:45] = rng.random((30, 30)) > 0.3
    crop = tight(full)
    for window, out in (((5, -8, 75, 62), 32), ((20, 20, 30, 30), 32), ((-10, 0, 40, 50), 64)):
        padded = np.zeros((window[3] - window[1], window[2] - window[0]), np.float32)
        y0, x0 = max(window[1], 0), max(window[0], 0)
        y1, x1 = min(window[3], 50), min(window[2], 60)
        padded[y0 - window[1] : y1 - window[1], x0 - window[0] : x1 - window[0]] = full[y0:y1, x0:x1]
        expected = cv2.resize(padded, (out, out), interpolation=cv2.INTER_LINEAR) > 0.5
        assert np.array_equal(resample_linear(crop, window, out), expected)


def test_compressed_counts_decode_what_pycocotools_encodes():
    rng = np.random.default_rng(0)
    for t in range(60):
        h, w = (int(v) for v in rng.integers(1, 60, 2))
        mask = np.asfortranarray((rng.random((h, w)) > rng.random()).astype(np.uint8))
        if t % 7 == 0:
            mask[:] = t % 2
        flat = mask.flatten(order="F")
        bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
        runs = np.concatenate([[0] * int(flat[0]), np.diff(bounds)])  # runs start with zeros
        assert np.array_equal(compressed_counts(mask_utils.encode(mask)["counts"]), runs)
    assert compressed_counts(b"!!") is None and compressed_counts(b"Y3o") is None  # bad char, cut number


def test_corrupt_compressed_rle_is_a_format_error():
    good = mask_utils.encode(np.asfortranarray(np.eye(20, dtype=np.uint8)))["counts"].decode()
    assert to_rle({"size": [20, 20], "counts": good}, 20, 20)["counts"] == good
    for bad in (good[:-3], good + "0", "Y3~~0k4"):
        with pytest.raises(FormatError, match="corrupt"):
            to_rle({"size": [20, 20], "counts": bad}, 20, 20)


def test_crop_codec_equals_full_image_pycocotools():
    """encode_crop / decode_crop never build the full image, yet give what pycocotools gives on it."""
    rng = np.random.default_rng(5)
    for t in range(200):
        height, width = (int(v) for v in rng.integers(1, 40, 2))
        mask = rng.random(tuple(int(v) for v in rng.integers(1, 50, 2))) > rng.random()
        if t % 5 == 0:
            mask[:] = True  # full columns: runs joined across columns, and an image ending in foreground
        crop = Crop(mask, int(rng.integers(-20, width + 5)), int(rng.integers(-20, height + 5)))
        full = np.asfortranarray(crop.within((0, 0, width, height)).astype(np.uint8))
        expected = mask_utils.encode(full)
        rle = encode_crop(crop, height, width)
        assert rle == {"size": [height, width], "counts": expected["counts"].decode()}
        decoded = decode_crop(rle)
        assert np.array_equal(decoded.within((0, 0, width, height)), full.astype(bool))
        tight_full = tight(full.astype(bool))
        assert decoded.window == tight_full.window and np.array_equal(decoded.mask, tight_full.mask)


def test_rle_iou_of_overlapping_disjoint_and_empty_masks():
    a, b = np.zeros((8, 8), bool), np.zeros((8, 8), bool)
    a[:4, :4], b[2:6, :4] = True, True
    ra, rb, empty = (encode_crop(Crop(m), 8, 8) for m in (a, b, np.zeros((8, 8), bool)))
    assert rle_iou(ra, rb) == pytest.approx(8 / 24) and rle_iou(ra, ra) == 1.0
    assert rle_iou(ra, empty) == 0.0 and rle_iou(empty, empty) == 1.0
