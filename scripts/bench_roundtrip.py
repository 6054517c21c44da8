"""The round trip without a tool running: export, then import, on converted files; and the same with
every object taken from its outlines alone (as if everyone had been edited), to measure what the
polygon outlines keep.

    python scripts/bench_roundtrip.py CONVERTED.json [CONVERTED.json ...]

For each file and each tool (Label Studio's tasks, CVAT's COCO file): whether the imported file
equals the converted one (every field, every edge), and the IoU of each amodal and visible mask
rebuilt from its exported outlines with the mask (all, and those without holes). JSON on stdout.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from amodalize.data.masks import rle_area, rle_iou, rle_to_polygons, to_rle  # noqa: E402
from amodalize.export import exporter  # noqa: E402
from amodalize.export.common import converted_images  # noqa: E402
from amodalize.export.restore import edited  # noqa: E402

EXPORTED = {"labelstudio": "tasks.json", "cvat": "."}


def rebuilt_ious(returned) -> dict:
    """IoU of each object's masks rebuilt from its returned outlines with the converted masks."""
    images, _ = converted_images(returned.base, Path("."))
    by_id = {image.image["id"]: image for image in images}
    ious, solid = [], []
    for back in returned.images:
        image = by_id[back.image_id]
        h, w = image.image["height"], image.image["width"]
        anns = {a["id"]: a for a in image.annotations}
        for object_id, got in back.objects.items():
            made = edited(anns[object_id], got, h, w)
            for key in ("segmentation", "visible_mask"):
                was = to_rle(anns[object_id][key], h, w)
                iou = rle_iou(to_rle(made[key], h, w), was)
                ious.append(iou)
                if rle_area(to_rle(rle_to_polygons(was), h, w)) == rle_area(was):
                    solid.append(iou)
    stats = {}
    for name, values in (("all", ious), ("without_holes", solid)):
        v = np.array(values)
        stats[name] = {
            "masks": len(v),
            "median": round(float(np.median(v)), 4) if len(v) else None,
            "mean": round(float(v.mean()), 4) if len(v) else None,
            "worst": round(float(v.min()), 4) if len(v) else None,
            "under_0.99": int((v < 0.99).sum()),
        }
    return stats


def main() -> None:
    rows = {}
    for path in map(Path, sys.argv[1:]):
        converted = json.loads(path.read_text())
        for tool, name in EXPORTED.items():
            with tempfile.TemporaryDirectory() as tmp:
                tmp = Path(tmp)
                run = [sys.executable, "-m", "amodalize"]
                subprocess.run([*run, "export", path, "--to", tool, tmp / "out"], check=True, capture_output=True)
                exported = tmp / "out" / name
                like = [] if tool == "labelstudio" else ["--like", path]
                said = subprocess.run(
                    [*run, "import", exported, tmp / "back.json", *like], capture_output=True, text=True
                )
                back = json.loads((tmp / "back.json").read_text())
                back["info"]["amodalize"].pop("imported")
                returned = exporter(tool).read_back(exported, None if tool == "labelstudio" else converted)
                rows[f"{path.name} {tool}"] = {
                    "identical": back == converted,
                    "edges": len(back.get("occlusion_pairs", [])),
                    "annotations": len(back["annotations"]),
                    "import_said": said.stderr.strip().splitlines()[-1],
                    "rebuilt_from_outlines_iou": rebuilt_ious(returned),
                }
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
