import json

import pytest
from pycocotools import mask as mask_utils

from amodalize.data.formats import read_dataset
from amodalize.data.masks import rle_area, to_rle
from amodalize.errors import InputError
from tests.conftest import COCOA_DEMO, regions

SQUARE = [10, 10, 30, 10, 30, 30, 10, 30]
BIG = [5, 5, 40, 5, 40, 40, 5, 40]


def write(tmp_path, doc, name="in.json"):
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def coco_doc():
    rle = mask_utils.encode(mask_utils.decode(mask_utils.frPyObjects([SQUARE], 50, 60)[0]))
    rle["counts"] = rle["counts"].decode()
    return {
        "info": {"description": "tiny"},
        "licenses": [],
        "images": [{"id": 7, "width": 60, "height": 50, "file_name": "a.jpg", "extra": "x"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 3, "segmentation": [SQUARE], "bbox": [10, 10, 20, 20], "area": 400},
            {"id": 2, "image_id": 7, "category_id": 3, "segmentation": rle, "bbox": [10, 10, 20, 20], "iscrowd": 0},
            {
                "id": 3,
                "image_id": 7,
                "category_id": 3,
                "segmentation": {"size": [50, 60], "counts": [100, 20, 2880]},
                "iscrowd": 1,
            },
        ],
        "categories": [{"id": 3, "name": "thing"}],
    }


def test_coco_polygons_and_rles(tmp_path):
    ds = read_dataset(write(tmp_path, coco_doc()))
    assert ds.format == "coco" and not ds.has_amodal
    a, b, crowd = ds.instances
    assert a.modal == b.modal  # the same square as polygon and as compressed RLE
    assert crowd.iscrowd and rle_area(crowd.modal) == 20
    assert ds.categories == [{"id": 3, "name": "thing"}] and ds.extra["info"] == {"description": "tiny"}


def test_kins_old_and_2020_keys(tmp_path):
    modal = to_rle([SQUARE], 50, 60)
    old = {
        "images": [{"id": 1, "width": 60, "height": 50}],
        "annotations": [
            {
                "id": 4,
                "image_id": 1,
                "category_id": 4,
                "segmentation": [BIG],
                "inmodal_seg": modal,
                "bbox": [5, 5, 35, 35],
                "inmodal_bbox": [10, 10, 20, 20],
            }
        ],
    }
    new = {
        "images": [{"id": 1, "width": 60, "height": 50}],
        "annotations": [
            {
                "id": 4,
                "image_id": 1,
                "category_id": 4,
                "a_segm": [BIG],
                "i_segm": [SQUARE],
                "a_bbox": [5, 5, 35, 35],
                "i_bbox": [10, 10, 20, 20],
            }
        ],
    }
    a, b = read_dataset(write(tmp_path, old, "old.json")), read_dataset(write(tmp_path, new, "new.json"))
    assert a.format == b.format == "kins"
    assert a.instances[0].modal == b.instances[0].modal == modal
    assert a.instances[0].amodal == b.instances[0].amodal == to_rle([BIG], 50, 60)
    assert a.instances[0].category_id == 4


def test_cocoa_full_layout_ids_and_depth_constraint(tmp_path):
    visible = to_rle([SQUARE], 50, 60)
    doc = {
        "images": [{"id": 5, "width": 60, "height": 50}, {"id": 6, "width": 60, "height": 50}],
        "annotations": [
            {
                "image_id": 5,
                "id": 100,
                "depth_constraint": "2-1",
                "regions": [
                    {"segmentation": BIG, "visible_mask": visible, "name": "a"},
                    {"segmentation": SQUARE, "name": "b"},
                ],
            },
            {"image_id": 6, "id": 101, "depth_constraint": "", "regions": [{"segmentation": SQUARE, "name": "c"}]},
        ],
    }
    path = write(tmp_path, doc)
    ds = read_dataset(path)
    assert ds.format == "cocoa"
    assert [i.id for i in ds.instances] == [1, 2, 3]
    assert [i.id for i in read_dataset(path).instances] == [1, 2, 3]
    assert ds.instances[0].occluded_by == (2,) and ds.instances[1].occluded_by == ()
    assert ds.instances[0].modal == visible and ds.instances[1].modal == ds.instances[1].amodal
    assert ds.images[0].source["cocoa"]["depth_constraint"] == "2-1"


def test_cocoa_demo_files(cocoa_files):
    counts = []
    for k in range(1, 6):
        ds = read_dataset(cocoa_files / f"{k}.json")
        assert ds.format == "cocoa" and ds.has_amodal
        assert ds.images[0].file_name in (f"{k}.jpg", f"{k}.png")  # the image beside gives the name
        counts.append(len(ds.instances))
        assert [i.id for i in ds.instances] == list(range(1, len(ds.instances) + 1))
    assert counts == [regions(cocoa_files / f"{k}.json") for k in range(1, 6)]
    if cocoa_files == COCOA_DEMO:
        assert counts == [2, 11, 19, 10, 6]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("images"), "has no 'images'"),
        (lambda d: d["annotations"][0].update(image_id=99), "points to image 99"),
        (lambda d: d["annotations"][0].update(segmentation=[[1, 1, 2, 2]]), "annotation 1: polygon with 2 points"),
        (lambda d: d["annotations"][1]["segmentation"].update(size=[10, 10]), "annotation 2: RLE size"),
        (lambda d: d["annotations"][0].update(bbox=[50, 40, 30, 30]), "annotation 1: bbox .* lies outside"),
        (lambda d: d["annotations"][1].update(id=1), "duplicate annotation id 1"),
        (lambda d: d.update(images=[], annotations=[]), "no images"),
        (lambda d: d["images"][0].update(width="60"), "'width' must be int"),
    ],
)
def test_bad_input_names_file_and_problem(tmp_path, mutate, message):
    doc = coco_doc()
    mutate(doc)
    path = write(tmp_path, doc)
    with pytest.raises(InputError, match=message) as e:
        read_dataset(path)
    assert str(e.value).startswith(str(path)) and "\n" not in str(e.value)


def test_format_override_and_ambiguity(tmp_path):
    path = write(tmp_path, {"annotations": [{"regions": []}]})
    with pytest.raises(InputError, match="has no 'images'"):
        read_dataset(path, "coco")
    with pytest.raises(InputError, match="not a COCO, COCOA or KINS file"):
        read_dataset(write(tmp_path, {"foo": 1}, "x.json"))
