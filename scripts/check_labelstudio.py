"""The round trip through a running Label Studio: tasks in, images shown, a person's fixes, JSON out,
``amodalize import`` back.

    python scripts/check_labelstudio.py CONVERTED.json IMAGES_DIR --label-studio /path/to/label-studio

Starts ``label-studio`` (pip's) on localhost with local-file serving from a document root under
``--work`` (the images in its ``images/`` subfolder, as the default ``--image-root`` expects), makes
a project with the exported labeling config and a local-files storage at that subfolder, imports
``export --to labelstudio``'s tasks, fetches every task's image through its URL, submits an
annotation on the first tasks with a person's fixes (a relation reversed, a vertex moved, a region
deleted) through the API, exports the project as JSON and imports it with ``amodalize import``.
Prints one JSON object with the figures; nothing here is needed by the product. The test suite runs
it where AMODALIZE_LABEL_STUDIO names the executable and skips it elsewhere.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from amodalize.check.changes import changes  # noqa: E402
from amodalize.export.labelstudio import CONFIG, REGION_ID, TASKS  # noqa: E402

TOKEN = "amodalize0check0token0000000000000000000"
USER, PASSWORD = "check@amodalize.local", "amodalize-check"


def call(base: str, method: str, path: str, body: object = None, raw: bool = False) -> object:
    """One Label Studio API call with the check's token; JSON in and out (bytes with ``raw``)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Authorization", f"Token {TOKEN}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=120) as response:
        payload = response.read()
    return payload if raw else json.loads(payload or b"null")


def start(executable: str, work: Path, port: int) -> subprocess.Popen:
    """Label Studio on localhost, serving local files from ``work/root``; waits until it answers."""
    env = {
        **os.environ,
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(work / "root"),
        "LABEL_STUDIO_BASE_DATA_DIR": str(work / "data"),
        "SENTRY_DSN": "",
    }
    command = [executable, "start", "--no-browser", "--port", str(port), "--data-dir", str(work / "data")]
    command += ["--username", USER, "--password", PASSWORD, "--user-token", TOKEN, "--enable-legacy-api-token"]
    log = open(work / "label-studio.log", "w")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://localhost:{port}"
    for _ in range(240):
        if server.poll() is not None:
            raise SystemExit(f"label-studio exited; see {work / 'label-studio.log'}")
        try:
            call(base, "GET", "/api/projects")
            return server
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(1)
    server.terminate()
    raise SystemExit("label-studio did not answer in 4 minutes")


def fix(result: list) -> dict:
    """A person's fixes on one task's result, in place: the first relation reversed, a vertex of the
    first amodal outline (the one farthest from its centre) pulled 5% of the image farther out, the visible outline
    of another object deleted."""
    done = {}
    relations = [r for r in result if r.get("type") == "relation"]
    if relations:
        relations[0]["direction"] = "left"
        done["reversed"] = (relations[0]["from_id"], relations[0]["to_id"])
    amodal = [r for r in result if r.get("type") == "polygonlabels" and str(r.get("id", "")).startswith("a")]
    if amodal:
        points = amodal[0]["value"]["points"]
        cx, cy = (sum(p[k] for p in points) / len(points) for k in (0, 1))
        inside = [i for i, (x, y) in enumerate(points) if 1 < x < 99 and 1 < y < 99] or list(range(len(points)))
        k = max(inside, key=lambda i: (points[i][0] - cx) ** 2 + (points[i][1] - cy) ** 2)  # farthest out
        x, y = points[k]
        norm = max(1e-6, ((x - cx) ** 2 + (y - cy) ** 2) ** 0.5)
        points[k] = [min(100.0, max(0.0, x + 5 * (x - cx) / norm)), min(100.0, max(0.0, y + 5 * (y - cy) / norm))]
        done["moved"] = amodal[0]["id"]
    visible = [r for r in result if r.get("type") == "polygonlabels" and str(r.get("id", "")).startswith("v")]
    others = [
        r for r in visible if not amodal or REGION_ID.fullmatch(r["id"])[2] != REGION_ID.fullmatch(amodal[0]["id"])[2]
    ]
    if others:
        result.remove(others[0])
        done["deleted"] = others[0]["id"]
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("converted", type=Path)
    parser.add_argument("images_dir", type=Path)
    parser.add_argument("--label-studio", default=os.environ.get("AMODALIZE_LABEL_STUDIO", "label-studio"))
    parser.add_argument("--work", type=Path, default=Path("build/labelstudio-check"))
    parser.add_argument("--port", type=int, default=8093)
    parser.add_argument("--edit", type=int, default=3, help="tasks a 'person' fixes")
    args = parser.parse_args()
    work = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    (work / "root").mkdir(parents=True)
    shutil.copytree(args.images_dir, work / "root" / "images")
    amodalize = [sys.executable, "-m", "amodalize"]
    subprocess.run([*amodalize, "export", args.converted, "--to", "labelstudio", work / "export"], check=True)
    tasks = json.loads((work / "export" / TASKS).read_text())
    server = start(args.label_studio, work, args.port)
    base = f"http://localhost:{args.port}"
    try:
        config = (work / "export" / CONFIG).read_text()
        project = call(base, "POST", "/api/projects", {"title": "amodalize check", "label_config": config})
        storage = {"project": project["id"], "path": str(work / "root" / "images"), "use_blob_urls": False}
        call(base, "POST", "/api/storages/localfiles", {**storage, "title": "images", "regex_filter": ""})
        call(base, "POST", f"/api/projects/{project['id']}/import", tasks)
        stored = call(base, "GET", f"/api/tasks?project={project['id']}&page_size=100000&fields=all")
        stored = stored["tasks"] if isinstance(stored, dict) else stored
        shown = 0
        for item in stored:
            try:
                shown += len(call(base, "GET", item["data"]["image"], raw=True)) > 0
            except urllib.error.HTTPError:
                pass
        edits = {}
        for item in stored[: args.edit]:
            predictions = call(base, "GET", f"/api/predictions?task={item['id']}")
            result = json.loads(json.dumps(predictions[0]["result"]))
            edits[item["data"]["coco_image_id"]] = fix(result)
            call(base, "POST", f"/api/tasks/{item['id']}/annotations", {"result": result, "was_cancelled": False})
        export = f"/api/projects/{project['id']}/export?exportType=JSON"
        (work / "all-tasks.json").write_bytes(call(base, "GET", export + "&download_all_tasks=true", raw=True))
        (work / "annotated-tasks.json").write_bytes(call(base, "GET", export, raw=True))  # the default
    finally:
        server.terminate()
        server.wait(timeout=60)
    converted = json.loads(args.converted.read_text())
    regions = sum(r["type"] == "polygonlabels" for t in tasks for r in t["predictions"][0]["result"])
    relations = sum(r["type"] == "relation" for t in tasks for r in t["predictions"][0]["result"])
    figures = {
        "tasks_exported": len(tasks),
        "tasks_stored": len(stored),
        "regions_exported": regions,
        "relations_exported": relations,
        "images_shown": shown,
        "edits": edits,
    }
    # every task exported, read back alone; the annotated ones only (Label Studio's default) with --like
    for name, like in (("all-tasks", []), ("annotated-tasks", ["--like", args.converted])):
        fixed = work / f"{name}-fixed.json"
        command = [*amodalize, "import", work / f"{name}.json", fixed, *like]
        said = subprocess.run(command, capture_output=True, text=True)
        back = json.loads(fixed.read_text()) if fixed.exists() else None
        row = {"exit": said.returncode, "said": said.stderr.strip().splitlines()}
        if back is not None:
            old = {a["id"]: a for a in converted["annotations"] if a["image_id"] not in edits}
            new = {a["id"]: a for a in back["annotations"] if a["image_id"] not in edits}
            done = changes(converted, back)
            row.update(
                images=len(back["images"]),
                untouched_images_identical=old == new,
                changes={k: v for k, v in done.items() if k in ("edges", "objects", "least_sure")},
            )
        figures[name] = row
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
