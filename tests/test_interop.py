"""Round trips through the annotation tools' own readers (amodalize[interop]), run in the
environment `make install` gives them (.venv-interop, or the Python AMODALIZE_INTEROP_PYTHON
names); skipped with a reason where it is absent. Nothing here downloads anything."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from amodalize.export import labelstudio
from tests.conftest import invoke

pytestmark = pytest.mark.slow  # runs the annotation tools' own readers (and trains Ultralytics)

ROOT = Path(__file__).resolve().parents[1]
PYTHON = Path(os.environ.get("AMODALIZE_INTEROP_PYTHON") or ROOT / ".venv-interop" / "bin" / "python")

pytestmark = pytest.mark.skipif(
    not PYTHON.is_file(), reason=f"the interop readers are not installed ({PYTHON} not found; run `make install`)"
)


def run(code: str, cwd: Path) -> dict:
    """Run ``code`` in the interop environment; it prints one JSON document."""
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(cwd / "ultralytics")}
    done = subprocess.run([str(PYTHON), "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Rendered synth scenes with COCO ids, converted with the shipped model, with their report."""
    root = tmp_path_factory.mktemp("interop")
    invoke(["synth", root, "--images", "4", "--size", "96", "--seed", "6", "--categories", "coco", "--render"])
    invoke(["convert", root / "modal.json", root / "out.json", "--workers", "1"])
    invoke(["report", root / "out.json", root / "report", "--images-dir", root / "images"])
    return root


def test_label_studio_converter_imports_the_review_file(converted):
    review = json.loads((converted / "report" / "review.coco.json").read_text())
    code = f"""
import json
from label_studio_converter.imports.coco import convert_coco_to_ls
convert_coco_to_ls({str(converted / "report" / "review.coco.json")!r}, "tasks.json", out_type="predictions")
tasks = json.load(open("tasks.json"))
regions = [r for t in tasks for r in t["predictions"][0]["result"] if r["type"] == "polygonlabels"]
print(json.dumps({{"tasks": len(tasks), "polygons": len(regions)}}))
"""
    got = run(code, converted)
    assert got == {"tasks": len(review["images"]), "polygons": len(review["annotations"])}


def test_label_studio_reads_the_exported_tasks_and_config(converted, tmp_path):
    invoke(["export", converted / "out.json", "--to", "labelstudio", tmp_path])
    tasks = json.loads((tmp_path / labelstudio.TASKS).read_text())
    regions = sum(r["type"] == "polygonlabels" for t in tasks for r in t["predictions"][0]["result"])
    # a person accepts the predictions, Label Studio exports them as COCO with the project's config
    code = f"""
import json
from label_studio_converter import Converter
tasks = json.load(open({labelstudio.TASKS!r}))
for k, t in enumerate(tasks):
    t["id"] = k + 1
    t["annotations"] = [{{"id": k + 1, "result": t.pop("predictions")[0]["result"]}}]
json.dump(tasks, open("accepted.json", "w"))
converter = Converter(config=open({labelstudio.CONFIG!r}).read(), project_dir=None)
converter.convert_to_coco("accepted.json", "coco", is_dir=False)
doc = json.load(open("coco/result.json"))
print(json.dumps({{"images": len(doc["images"]), "polygons": len(doc["annotations"])}}))
"""
    assert run(code, tmp_path) == {"images": len(tasks), "polygons": regions}


def test_datumaro_imports_the_converted_file_and_the_cvat_export(converted, tmp_path):
    doc = json.loads((converted / "out.json").read_text())
    objects = {a["id"] for a in doc["annotations"]}
    for seg in ("rle", "polygon"):  # datumaro's COCO reader: the converted file itself
        invoke(
            [
                "convert",
                converted / "modal.json",
                tmp_path / seg / "annotations" / "instances_default.json",
                "--workers",
                "1",
                "--segmentation",
                seg,
            ]
        )
    invoke(["export", converted / "out.json", "--to", "cvat", tmp_path / "cvat"])
    for folder in ("rle", "polygon", "cvat"):
        (tmp_path / folder / "images" / "default").mkdir(parents=True)
    code = """
import json, sys
import datumaro as dm
out = {}
for folder in ("rle", "polygon", "cvat"):
    ds = dm.Dataset.import_from(folder, "coco_instances")
    shapes = [a for item in ds for a in item.annotations if type(a).__name__ in ("Polygon", "RleMask", "Mask")]
    out[folder] = {"images": len(ds), "ids": sorted({a.id for a in shapes}),
                   "attributes": sorted({k for a in shapes for k in a.attributes})}
print(json.dumps(out))
"""
    got = run(code, tmp_path)
    for folder in ("rle", "polygon"):
        assert got[folder]["images"] == len(doc["images"]) and set(got[folder]["ids"]) == objects
    assert set(got["cvat"]["ids"]) >= objects and len(got["cvat"]["ids"]) == 2 * len(objects)
    assert {"occluded_by", "amodal_confidence", "occlude_rate", "object"} <= set(got["cvat"]["attributes"])


def test_ultralytics_reads_the_yolo_labels(converted, tmp_path):
    invoke(["export", converted / "out.json", "--to", "yolo", tmp_path / "yolo", "--images-dir", converted / "images"])
    doc = json.loads((converted / "out.json").read_text())
    code = """
import glob, json, yaml
from ultralytics.data.utils import verify_image_label
names = yaml.safe_load(open("yolo/data.yaml"))["names"]
segments, problems = 0, []
for image in sorted(glob.glob("yolo/images/*")):
    label = image.replace("/images/", "/labels/").rsplit(".", 1)[0] + ".txt"
    result = verify_image_label((image, label, "", False, len(names), 0, 0, False))
    segments += len(result[3])
    problems += [result[-1]] if result[-1] else []
print(json.dumps({"segments": segments, "problems": problems}))
"""
    assert run(code, tmp_path) == {"segments": len(doc["annotations"]), "problems": []}
    shutil.rmtree(tmp_path / "yolo")


def test_ultralytics_trains_on_the_yolo_export(converted, tmp_path):
    """A short Ultralytics segmentation training (CPU, 2 epochs from a model definition: no weights
    downloaded) reads every exported label and runs to its end with finite losses."""
    invoke(["export", converted / "out.json", "--to", "yolo", tmp_path / "yolo", "--images-dir", converted / "images"])
    objects = len(json.loads((converted / "out.json").read_text())["annotations"])
    code = """
import json, math
from ultralytics import YOLO
model = YOLO("yolov8n-seg.yaml")
run = model.train(data="yolo/data.yaml", epochs=2, imgsz=96, batch=2, device="cpu", workers=0, plots=False,
                  amp=False, pretrained=False, seed=0, deterministic=True, project="runs", name="seg", verbose=False)
trainer = model.trainer
losses = list(trainer.label_loss_items(trainer.tloss).values())
print(json.dumps({
    "epochs": trainer.epoch + 1,
    "instances": int(trainer.validator.metrics.nt_per_class.sum()),
    "finite": all(math.isfinite(v) for v in losses),
    "weights": (run.save_dir / "weights" / "last.pt").is_file(),
}))
"""
    got = run(code, tmp_path)
    assert got == {"epochs": 2, "instances": objects, "finite": True, "weights": True}
