"""How good a converted file's labels are, estimated from its own calibrated confidences, and (with
ground truth) measured beside the estimate.

An edge's ``confidence`` is the probability that its direction is right and an annotation's
``amodal_confidence`` the expected IoU of its amodal mask with the truth, both calibrated on
synthetic occlusions without ground truth. Their means estimate the file's ordering accuracy and
its completion IoU; the intervals add the spread of outcomes that calibrated confidences leave
(sampling) to the calibration error measured on sets with ground truth.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from amodalize.data.masks import rle_iou
from amodalize.data.records import Dataset
from amodalize.errors import InputError

# Two-sided 95% normal quantile.
Z95 = 1.96
# Calibration error measured with ground truth, added to the sampling half-width: edges 0.022 and
# amodal_confidence 0.020 (expected calibration error over six sets pooled, docs/measurements.md,
# "Better than geometry"), rounded up.
EDGE_MARGIN = 0.03
IOU_MARGIN = 0.03
# Spread of (true IoU - amodal_confidence) per object: the pooled mean absolute error 0.059 is
# ~0.8 of a normal spread's standard deviation.
IOU_SPREAD = 0.075
EDGE_BINS = np.linspace(0.5, 1.0, 11)
IOU_BINS = np.linspace(0.0, 1.0, 11)


@dataclass(frozen=True)
class Estimate:
    """A mean with its interval: ``value`` in [``low``, ``high``] over ``count`` items (0-1 scale)."""

    value: float
    low: float
    high: float
    count: int

    def contains(self, measured: float) -> bool:
        """True when ``measured`` lies inside the interval."""
        return self.low <= measured <= self.high

    def to_json(self) -> dict:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def _clipped(value: float, half: float, count: int) -> Estimate:
    return Estimate(value, max(0.0, value - half), min(1.0, value + half), count)


def estimate_accuracy(confidence: np.ndarray) -> Estimate | None:
    """Share of right directions among edges of ``confidence`` [N]: their mean, and an interval of
    the Poisson-binomial spread (what calibrated confidences leave) plus ``EDGE_MARGIN``."""
    if not len(confidence):
        return None
    n = len(confidence)
    spread = math.sqrt(float(np.sum(confidence * (1 - confidence)))) / n
    return _clipped(float(np.mean(confidence)), Z95 * spread + EDGE_MARGIN, n)


def estimate_iou(amodal_confidence: np.ndarray) -> Estimate | None:
    """Mean IoU of the masks whose estimated IoUs are ``amodal_confidence`` [N], with an interval of
    the per-object spread ``IOU_SPREAD`` over N plus ``IOU_MARGIN``."""
    if not len(amodal_confidence):
        return None
    n = len(amodal_confidence)
    return _clipped(float(np.mean(amodal_confidence)), Z95 * IOU_SPREAD / math.sqrt(n) + IOU_MARGIN, n)


def histogram(values: np.ndarray, bins: np.ndarray) -> list[int]:
    """Counts of ``values`` over the intervals of ``bins`` (the last one closed)."""
    return [int(c) for c in np.histogram(values, bins=bins)[0]]


def summarize(doc: dict, path: Path) -> dict:
    """The counts, confidence histograms and estimates of a converted document (``convert``'s JSON).

    Fails with one line when the file carries no confidences (not converted, or converted by a
    method that gives none)."""
    annotations = [a for a in doc.get("annotations", []) if not a.get("iscrowd")]
    pairs = doc.get("occlusion_pairs", [])
    edge_conf = np.array([p["confidence"] for p in pairs if p.get("confidence") is not None], dtype=np.float64)
    amodal_conf = [a["amodal_confidence"] for a in annotations if a.get("amodal_confidence") is not None]
    if not len(edge_conf) and not amodal_conf:
        raise InputError(
            path,
            "has no confidences (edge 'confidence', 'amodal_confidence'): report reads an `amodalize convert` "
            "output made with the defaults (PCNet-M, fused order); run `amodalize convert INPUT.json "
            "CONVERTED.json` first",
        )
    occluded = [a for a in annotations if a.get("occluded_by")]
    occluded_conf = np.array(
        [a["amodal_confidence"] for a in occluded if a.get("amodal_confidence") is not None], dtype=np.float64
    )
    hidden = sum(max(0, a.get("area", 0) - a.get("visible_area", a.get("area", 0))) for a in annotations)
    visible = sum(a.get("visible_area", a.get("area", 0)) for a in annotations)
    estimates = {
        "order_accuracy": estimate_accuracy(edge_conf),
        "occluded_iou": estimate_iou(occluded_conf),
        "all_iou": estimate_iou(np.array(amodal_conf, dtype=np.float64)),
    }
    return {
        "images": len(doc.get("images", [])),
        "instances": len(annotations),
        "occluded_instances": len(occluded),
        "hidden_area": int(hidden),
        "hidden_share": hidden / visible if visible else 0.0,
        "edges": len(pairs),
        "edges_with_confidence": len(edge_conf),
        **{key: e.to_json() if e else None for key, e in estimates.items()},
        "edge_histogram": {"bins": EDGE_BINS.round(2).tolist(), "counts": histogram(edge_conf, EDGE_BINS)},
        "iou_histogram": {"bins": IOU_BINS.round(2).tolist(), "counts": histogram(occluded_conf, IOU_BINS)},
        "provenance": doc.get("info", {}).get("amodalize", {}) if isinstance(doc.get("info"), dict) else {},
    }


def measured_iou_of_occluded(pred: Dataset, gt: Dataset) -> float | None:
    """Mean true IoU of the instances the prediction completes behind an occluder (those with
    ``occluded_by``), against ``gt``'s amodal masks matched by annotation id."""
    truth = {i.id: i for i in gt.instances}
    ious = []
    for inst in pred.instances:
        if inst.iscrowd or not inst.occluded_by or inst.id not in truth or inst.amodal is None:
            continue
        ious.append(rle_iou(inst.amodal, truth[inst.id].amodal))
    return float(np.mean(ious)) if ious else None
