"""`amodalize report`: one HTML page that shows how good a converted file is and what to check first,
with a COCO file of the images to correct in an annotation tool.

The page opens from disk (no server, script, font or address elsewhere). It holds the summary
(``amodalize.check.quality``), confidence histograms, the measured figures beside the estimates when
ground truth is given, and the least-confident images drawn as thumbnails. Only those images are
decoded and drawn, one at a time, so memory stays flat however large the file.
"""

from __future__ import annotations

import html
import os
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from amodalize.check.evaluate import evaluate
from amodalize.check.quality import Estimate, measured_iou_of_occluded, summarize
from amodalize.check.visualize import background_of, render
from amodalize.data.formats import coco, read_dataset
from amodalize.data.formats.common import load_json, require
from amodalize.data.records import Dataset, ImageRecord
from amodalize.data.writer import current_umask, with_polygons, write_json_atomic
from amodalize.errors import InputError

# Longest side of a picture on the page (pixels; each links to one at full size) and the JPEG
# quality: 50 real photos' pictures take about 6 MB.
THUMB_SIDE = 640
JPEG_QUALITY = 80
# Uncertain items listed beside each picture.
ITEMS_SHOWN = 8
INDEX = "index.html"
REVIEW_FILE = "review.coco.json"


def uncertain_items(doc: dict) -> dict[str, dict[int, list[dict]]]:
    """By image id, the ``edges`` that carry a confidence and the ``completions`` (annotations of
    occluded objects) that carry an ``amodal_confidence``."""
    items: dict[str, dict[int, list[dict]]] = {"edges": defaultdict(list), "completions": defaultdict(list)}
    for p in doc.get("occlusion_pairs", []):
        if p.get("confidence") is not None:
            items["edges"][p["image_id"]].append(p)
    for a in doc.get("annotations", []):
        if a.get("amodal_confidence") is not None and a.get("occluded_by"):
            items["completions"][a["image_id"]].append(a)
    return items


def rank_images(items: dict[str, dict[int, list[dict]]]) -> list[tuple[int, float]]:
    """(image id, lowest confidence) of every image with an uncertain item (``uncertain_items``),
    least sure first (ties: more uncertain items first, then the id)."""
    lowest: dict[int, float] = {}
    count: dict[int, int] = defaultdict(int)
    for image_id, edges in items["edges"].items():
        lowest[image_id] = min(p["confidence"] for p in edges)
        count[image_id] += len(edges)
    for image_id, completions in items["completions"].items():
        lowest[image_id] = min(lowest.get(image_id, 1.0), *(a["amodal_confidence"] for a in completions))
        count[image_id] += len(completions)
    return sorted(lowest.items(), key=lambda kv: (kv[1], -count[kv[0]], kv[0]))


def review_subset(doc: dict, image_ids: list[int]) -> dict:
    """The images ``image_ids`` with all their converted annotations (every field kept), their edges,
    and the file's categories, info and licenses: a plain COCO file for an annotation tool."""
    chosen = set(image_ids)
    subset = {key: doc[key] for key in ("info", "licenses", "categories") if key in doc}
    subset["images"] = [im for im in doc.get("images", []) if im["id"] in chosen]
    subset["annotations"] = [a for a in doc.get("annotations", []) if a["image_id"] in chosen]
    subset["occlusion_pairs"] = [p for p in doc.get("occlusion_pairs", []) if p["image_id"] in chosen]
    return subset


def shown_items(image_id: int, items: dict[str, dict[int, list[dict]]]) -> tuple[list[dict], list[dict], list[int]]:
    """An image's least-confident edges and completions (ITEMS_SHOWN of each) and the annotation ids
    they name, in order of first mention: the objects numbered 1, 2, ... on its card."""
    edges = sorted(items["edges"].get(image_id, []), key=lambda p: p["confidence"])[:ITEMS_SHOWN]
    completions = sorted(items["completions"].get(image_id, []), key=lambda a: a["amodal_confidence"])[:ITEMS_SHOWN]
    named = [i for p in edges for i in (p["occluder_id"], p["occludee_id"])] + [a["id"] for a in completions]
    return edges, completions, list(dict.fromkeys(named))


def pictures(
    image: ImageRecord, dataset: Dataset, background: np.ndarray | None, numbered: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """A BGR picture of the image's objects over ``background`` (blank when None) at full size, and
    the same at most ``THUMB_SIDE`` pixels a side: visible masks, completed outlines, order arrows,
    and the objects of ``numbered`` labelled 1, 2, ... (the card's table names them)."""
    canvas, centres = render(image, dataset.by_image[image.id], background)
    full = canvas.copy()
    scale = min(1.0, THUMB_SIDE / max(image.width, image.height))
    if scale < 1.0:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        canvas = cv2.resize(canvas, size, interpolation=cv2.INTER_AREA)
    for k, ann_id in enumerate(numbered, start=1):
        if ann_id in centres:
            x, y = centres[ann_id]
            _label(full, str(k), (x, y), max(1.0, max(image.width, image.height) / THUMB_SIDE))
            _label(canvas, str(k), (round(x * scale), round(y * scale)), 1.0)
    return full, canvas


def _label(canvas: np.ndarray, text: str, point: tuple[int, int], scale: float) -> None:
    """``text`` centred on ``point`` in black on a white disc, ``scale`` times the size read on a
    THUMB_SIDE picture."""
    font, size, thick = cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, max(1, round(1.5 * scale))
    (w, h), _ = cv2.getTextSize(text, font, size, thick)
    cv2.circle(canvas, point, round(max(w, h) * 0.75 + 3 * scale), (255, 255, 255), -1, cv2.LINE_AA)
    cv2.putText(canvas, text, (point[0] - w // 2, point[1] + h // 2), font, size, (0, 0, 0), thick, cv2.LINE_AA)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _interval(e: dict | None) -> str:
    if e is None:
        return "–"
    return f"{_pct(e['value'])} <span class=dim>({_pct(e['low'])}–{_pct(e['high'])}, n={e['count']})</span>"


def histogram_svg(counts: list[int], bins: list[float], title: str) -> str:
    """Bars of ``counts`` over ``bins`` as inline SVG."""
    width, height, pad = 320, 120, 20
    top = max(counts) or 1
    bar = (width - 2 * pad) / len(counts)
    parts = [f'<svg width="{width}" height="{height + 30}" role="img" aria-label="{html.escape(title)}">']
    for k, c in enumerate(counts):
        h = (height - pad) * c / top
        x = pad + k * bar
        parts.append(
            f'<rect x="{x:.1f}" y="{height - h:.1f}" width="{bar - 2:.1f}" height="{h:.1f}" fill="#4a7bb7">'
            f"<title>{bins[k]:.2f}–{bins[k + 1]:.2f}: {c}</title></rect>"
        )
        if c:
            parts.append(f'<text x="{x + bar / 2:.1f}" y="{height - h - 3:.1f}" class=n>{c}</text>')
    for k in (0, len(counts) // 2, len(counts)):
        parts.append(f'<text x="{pad + k * bar:.1f}" y="{height + 14}" class=n>{bins[k]:.2f}</text>')
    parts.append(f'<text x="{width / 2}" y="{height + 28}" class=n>{html.escape(title)}</text></svg>')
    return "".join(parts)


def reliability_svg(table: list[dict], title: str, low: float) -> str:
    """Predicted against observed per bin (a reliability diagram) as inline SVG; the diagonal is
    perfect calibration, each dot's area its count."""
    side, pad = 200, 28

    def xy(p: float, o: float) -> tuple[float, float]:
        return pad + (p - low) / (1 - low) * side, pad + side - (o - low) / (1 - low) * side

    (x0, y0), (x1, y1) = xy(low, low), xy(1, 1)
    parts = [
        f'<svg width="{side + 2 * pad}" height="{side + 2 * pad + 14}" role="img" aria-label="{html.escape(title)}">',
        f'<rect x="{pad}" y="{pad}" width="{side}" height="{side}" fill="none" stroke="#999"/>',
        f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y1}" stroke="#bbb" stroke-dasharray="4 3"/>',
    ]
    total = sum(row["count"] for row in table) or 1
    for row in table:
        x, y = xy(row["predicted"], max(low, row["observed"]))
        r = 2 + 10 * (row["count"] / total) ** 0.5
        parts.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r:.1f}" fill="#c0504d" fill-opacity="0.7">'
            f"<title>{row['bin']}: predicted {row['predicted']:.2f}, observed {row['observed']:.2f}, "
            f"n={row['count']}</title></circle>"
        )
    parts.append(f'<text x="{pad}" y="{pad + side + 14}" class=l>predicted {low:g} → 1</text>')
    parts.append(f'<text x="{pad}" y="{pad - 8}" class=l>observed ↑ · {html.escape(title)}</text></svg>')
    return "".join(parts)


def _provenance(info: dict) -> str:
    checkpoint = info.get("checkpoint") or {}
    model = "–"
    if checkpoint:
        name = checkpoint.get("shipped_model")
        model = f"shipped model '{name}'" if name else str(checkpoint.get("path"))
        model += f" (SHA-256 {str(checkpoint.get('sha256', ''))[:12]}…)"
    decided = info.get("decided") or {}
    settings = info.get("settings") or {}
    rows = [
        ("amodalize", info.get("version", "–")),
        ("method / order", f"{info.get('method', '–')} / {info.get('order_method', '–')}"),
        ("model", model),
        ("test-time augmentation", checkpoint.get("tta", "–")),
        ("settings from", decided.get("source", "–")),
        (
            "thresholds",
            f"order {settings.get('order_th', '–')}, amodal {settings.get('amodal_th', '–')}, "
            f"eraser dilation {settings.get('eraser_dilate', '–')}",
        ),
        ("input", info.get("input", "–")),
    ]
    return "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)


def _measured_rows(measured: dict) -> str:
    est = measured["estimates"]
    rows = [
        ("ordering accuracy, occluded pairs", est["order_accuracy"], measured["order_acc"]),
        ("edges directed right (edges of occluded pairs)", est["order_accuracy"], measured["edge_right"]),
        ("mean IoU, completed occluded objects", est["occluded_iou"], measured["occluded_iou"]),
        ("mean IoU, all objects", est["all_iou"], measured["miou"]),
    ]
    out = []
    for name, e, value in rows:
        inside = "–" if e is None or value is None else ("yes" if Estimate(**e).contains(value) else "no")
        out.append(f"<tr><th>{name}</th><td>{_interval(e)}</td><td>{_pct(value)}</td><td>{inside}</td></tr>")
    return "".join(out)


def measure(pred_path: Path, gt_path: Path, summary: dict, gt_order: str = "masks") -> dict:
    """The figures ``summary`` estimates, measured against ground truth (``evaluate``'s protocol and
    ``gt_order``), with the reliability tables."""
    pred, gt = read_dataset(pred_path, "coco_amodal"), read_dataset(gt_path)
    metrics = evaluate(pred, gt, gt_order)
    edges = metrics["edge_confidence"]
    return {
        "estimates": {k: summary[k] for k in ("order_accuracy", "occluded_iou", "all_iou")},
        "order_acc": metrics["order_acc"],
        "edge_right": None if not edges else 1 - edges["wrong"] / edges["count"],
        "occluded_iou": measured_iou_of_occluded(pred, gt),
        "miou": metrics["miou"],
        "edge_reliability": edges,
        "iou_reliability": metrics["amodal_confidence"],
    }


STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse}th,td{padding:3px 10px;text-align:left;vertical-align:top}
th{font-weight:600}td.num{text-align:right}.dim{color:#777}.n{font-size:10px;fill:#444;text-anchor:middle}
.l{font-size:10px;fill:#444}
.plots{display:flex;gap:24px;flex-wrap:wrap}.card{display:flex;gap:16px;margin:14px 0;padding:10px;
border:1px solid #ddd;border-radius:6px;flex-wrap:wrap}.card img{border:1px solid #ccc;max-width:100%}
.card>div{flex:1;min-width:320px}.card p{margin:6px 0}.note{color:#a33}
code{background:#f3f3f3;padding:0 3px}
"""


def _image_card(
    image: ImageRecord, rank: int, low: float, picture: str, full: str, shown: tuple, names: dict, note: str
) -> str:
    edges, completions, numbered = shown
    number = {ann_id: k for k, ann_id in enumerate(numbered, start=1)}

    def who(ann_id: int) -> str:
        return f"<b>{number[ann_id]}</b> {html.escape(names.get(ann_id, '?'))}"

    rows = [
        f"<tr><td>{who(p['occluder_id'])} in front of {who(p['occludee_id'])}</td>"
        f"<td class=num>{p['confidence']:.2f}</td></tr>"
        for p in edges
    ] + [
        f"<tr><td>completion of {who(a['id'])} (hidden {100 * a.get('occlude_rate', 0):.0f}%)</td>"
        f"<td class=num>{a['amodal_confidence']:.2f}</td></tr>"
        for a in completions
    ]
    legend = ", ".join(f"{number[i]} = id {i}" for i in numbered)
    name = html.escape(image.file_name or "–")
    return (
        f'<div class=card id="image-{image.id}"><a href="{full}" title="full size">'
        f'<img src="{picture}" alt="image {image.id}"></a><div>'
        f"<b>#{rank}</b> image id <code>{image.id}</code> · <code>{name}</code> · lowest confidence {low:.2f}"
        f"{f'<div class=note>{html.escape(note)}</div>' if note else ''}"
        f"<table><tr><th>uncertain</th><th>confidence</th></tr>{''.join(rows)}</table>"
        f"<p class=dim>annotation ids: {legend}</p></div></div>"
    )


def blank_note(blank: int, shown: int, search: Path) -> str:
    """The page's line on pictures drawn without their image ('' when every image was found)."""
    if not blank:
        return ""
    return (
        f"{blank} of the {shown} images were not found under {search} (by their file_name) and are drawn on "
        "blank canvases; give the folder that holds them with --images-dir."
    )


def build_page(summary: dict, measured: dict | None, cards: list[str], source: Path, top: int, note: str = "") -> str:
    """The whole ``index.html``; ``note``: a warning shown above the pictures."""
    s = summary
    hidden = f"{s['hidden_area']:,} px ({100 * s['hidden_share']:.1f}% of the visible area)"
    counts = [
        ("images", f"{s['images']:,}"),
        ("instances", f"{s['instances']:,}"),
        ("occluded instances (completed behind an occluder)", f"{s['occluded_instances']:,}"),
        ("hidden area added", hidden),
        ("occlusion edges (with a confidence)", f"{s['edges']:,} ({s['edges_with_confidence']:,})"),
    ]
    drawn = s["provenance"].get("overlaps") or {}
    if any(drawn.values()):
        counts.append(
            (
                "pairs of masks drawn over each other: nested (inner put in front) / overlapping / boundary sliver",
                f"{drawn['nested']:,} / {drawn['overlapping']:,} / {drawn['sliver']:,}",
            )
        )
    estimates = [
        ("ordering accuracy (mean edge confidence)", _interval(s["order_accuracy"])),
        ("mean IoU of the completed occluded objects (mean amodal_confidence)", _interval(s["occluded_iou"])),
        ("mean IoU of all objects", _interval(s["all_iou"])),
    ]
    table = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in counts + estimates)
    plots = [
        histogram_svg(s["edge_histogram"]["counts"], s["edge_histogram"]["bins"], "edge confidence"),
        histogram_svg(s["iou_histogram"]["counts"], s["iou_histogram"]["bins"], "amodal_confidence, occluded"),
    ]
    gt_part = ""
    if measured is not None:
        if measured["edge_reliability"]:
            plots.append(reliability_svg(measured["edge_reliability"]["table"], "reliability of edges", 0.5))
        if measured["iou_reliability"]:
            plots.append(reliability_svg(measured["iou_reliability"]["table"], "reliability of amodal_confidence", 0.0))
        gt_part = (
            "<h2>Against ground truth</h2><table><tr><th></th><th>estimated (95% interval)</th><th>measured</th>"
            f"<th>inside?</th></tr>{_measured_rows(measured)}</table>"
        )
    title = f"amodalize report: {html.escape(source.name)}"
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{STYLE}</style></head><body><h1>{title}</h1>"
        "<p>Estimated from the file's own confidences, which are calibrated without ground truth: the "
        "intervals add what calibrated confidences leave to chance to the calibration error measured "
        "on sets with ground truth.</p>"
        f"<h2>Summary</h2><table>{table}</table>{gt_part}"
        f"<h2>Confidences</h2><div class=plots>{''.join(plots)}</div>"
        f"<h2>Check these first: the {len(cards)} least-confident images</h2>"
        f"<p>The objects each table names are numbered on its picture (click it for full size); arrows "
        f"point from the object in front to the one behind. These images and "
        f'their annotations are in <a href="{REVIEW_FILE}"><code>{REVIEW_FILE}</code></a> (COCO) to correct '
        f"in an annotation tool; up to {top} are shown (<code>--top</code>).</p>"
        f"{f'<p class=note>{html.escape(note)}</p>' if note else ''}"
        f"{''.join(cards)}<h2>Provenance</h2><table>{_provenance(s['provenance'])}</table></body></html>"
    )


def write_report(
    converted: Path,
    out_dir: Path,
    images_dir: Path | None = None,
    gt: Path | None = None,
    gt_order: str = "masks",
    top: int = 50,
    segmentation: str = "polygon",
    on_start: Callable[[int], None] | None = None,
    on_progress: Callable[[], None] | None = None,
) -> dict:
    """Write ``out_dir/index.html``, its pictures and ``review.coco.json`` (amodal masks as
    ``segmentation`` 'polygon' or 'rle') for a converted file; the folder appears whole or not at
    all. Returns the summary (and the measured figures with ``gt``)."""
    doc = load_json(converted)
    for key in ("images", "annotations"):
        require(doc, key, list, converted, "the top level")
    summary = summarize(doc, converted)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / INDEX).is_file():
        raise InputError(out_dir, "exists and holds something other than an earlier report; choose another folder")
    measured = measure(converted, gt, summary, gt_order) if gt is not None else None
    items = uncertain_items(doc)
    ranked = rank_images(items)[:top]
    subset = review_subset(doc, [image_id for image_id, _ in ranked])
    # only the images shown are read into records: memory follows --top, not the file
    dataset = coco.read(subset, converted, coco.COCO_AMODAL)
    images = {im.id: im for im in dataset.images}
    categories = {c.get("id"): str(c.get("name", c.get("id"))) for c in dataset.categories}
    names = {i.id: categories.get(i.category_id, f"category {i.category_id}") for i in dataset.instances}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        tmp.chmod(0o777 & ~current_umask())  # mkdtemp's 0700 would keep the page from a web server or another user
        (tmp / "images").mkdir()
        if on_start:
            on_start(len(ranked))
        cards, blank = [], 0
        # without --images-dir, the image files are looked for beside the converted file
        search = converted.parent if images_dir is None else images_dir
        for rank, (image_id, low) in enumerate(ranked, start=1):
            image = images[image_id]
            background = background_of(image, search)
            note = ""
            if background is None:
                blank += 1
                note = f"image file {image.file_name!r} not found in {search}: drawn on a blank canvas"
            shown = shown_items(image_id, items)
            picture, full = f"images/{image_id}.jpg", f"images/{image_id}-full.jpg"
            for path, pixels in zip((full, picture), pictures(image, dataset, background, shown[2])):
                cv2.imwrite(str(tmp / path), pixels, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            cards.append(_image_card(image, rank, low, picture, full, shown, names, note))
            if on_progress:
                on_progress()
        write_json_atomic(tmp / REVIEW_FILE, with_polygons(subset) if segmentation == "polygon" else subset)
        warning = blank_note(blank, len(cards), search)
        (tmp / INDEX).write_text(build_page(summary, measured, cards, converted, top, warning), encoding="utf-8")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {
        "summary": summary,
        "measured": measured,
        "shown": len(ranked),
        "blank_note": warning,
    }
