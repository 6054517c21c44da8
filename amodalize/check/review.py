"""What a person should check first in a converted file: its least-confident edges and completions,
and the images that hold them (``convert --review``)."""

from __future__ import annotations

from collections import defaultdict

# Share of the edges, and of the completed instances, listed for review: on the measured sets the
# least-confident 10% of the edges hold 26-64% of the wrongly directed ones, half of them over the
# six sets pooled (docs/measurements.md, "Better than geometry"), several times their share.
REVIEW_SHARE = 0.1


def least_confident(n: int, share: float = REVIEW_SHARE) -> int:
    """How many of ``n`` items the least-confident ``share`` is (at least one)."""
    return max(1, round(share * n))


def _lowest(items: list[dict], key: str, share: float) -> list[dict]:
    ranked = sorted(items, key=lambda item: item[key])
    return ranked[: least_confident(len(ranked), share)] if ranked else []


def review(doc: dict, share: float = REVIEW_SHARE) -> dict:
    """The least-confident ``share`` of the edges (``confidence``) and of the occluded completions
    (``amodal_confidence``) of an augmented document, and the images holding them, least sure first."""
    edges = [
        {
            "image_id": p["image_id"],
            "occluder_id": p["occluder_id"],
            "occludee_id": p["occludee_id"],
            "confidence": p["confidence"],
            "what": "which of the two is in front",
        }
        for p in doc.get("occlusion_pairs", [])
        if p.get("confidence") is not None
    ]
    completed = [
        {
            "image_id": a["image_id"],
            "id": a["id"],
            "amodal_confidence": a["amodal_confidence"],
            "occlude_rate": round(a.get("occlude_rate", 0.0), 4),
            "what": "the hidden part of the amodal mask (amodal_confidence: its estimated IoU)",
        }
        for a in doc.get("annotations", [])
        if a.get("amodal_confidence") is not None and a.get("occluded_by")
    ]
    edges, completed = _lowest(edges, "confidence", share), _lowest(completed, "amodal_confidence", share)
    per_image: dict[int, dict] = defaultdict(lambda: {"edges": 0, "instances": 0, "lowest": 1.0})
    for item in edges:
        entry = per_image[item["image_id"]]
        entry["edges"] += 1
        entry["lowest"] = min(entry["lowest"], item["confidence"])
    for item in completed:
        entry = per_image[item["image_id"]]
        entry["instances"] += 1
        entry["lowest"] = min(entry["lowest"], item["amodal_confidence"])
    names = {image["id"]: image.get("file_name") for image in doc.get("images", [])}
    images = sorted(
        (
            {
                "image_id": k,
                "file_name": names.get(k),
                "uncertain_edges": v["edges"],
                "uncertain_instances": v["instances"],
                "lowest_confidence": v["lowest"],
            }
            for k, v in per_image.items()
        ),
        key=lambda entry: (entry["lowest_confidence"], -entry["uncertain_edges"] - entry["uncertain_instances"]),
    )
    return {
        "share": share,
        "edges_total": sum(1 for p in doc.get("occlusion_pairs", []) if p.get("confidence") is not None),
        "images": images,
        "edges": edges,
        "instances": completed,
    }
