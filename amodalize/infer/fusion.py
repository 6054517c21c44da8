"""Ordering from all the evidence, and confidences users can trust.

Dual completion's two increments and the convex hulls' two increments of a candidate pair are
turned into antisymmetric features (each changes sign when the pair is swapped), and a logistic
regression without intercept maps them to P(i in front of j): swapping the pair gives exactly
1 - P. The weights are fitted by calibration on synthetic scenes of the dataset's own shapes, whose
order is known by construction (``amodalize.infer.calibrate``), never on ground truth.

A second, linear model estimates each completed mask's IoU with the truth from what the completion
did (its share of new pixels, how undecided the network was where it completed, whether anything
is in front, whether the object reaches the image border); it is fitted on the same scenes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Features of a pair (i, j), each positive when the evidence says i is in front of j: share and
# size of the difference of dual completion's increments (thresholded, then expected), of the
# convex hulls' increments and of the hulls' increments near the contact.
PAIR_FEATURES = (
    "pcnet_share",
    "pcnet_area",
    "soft_share",
    "soft_area",
    "convex_share",
    "convex_area",
    "local_share",
    "local_area",
)
# Features of a completed instance for its IoU estimate (the first is the intercept).
IOU_FEATURES = ("one", "new_share", "undecided", "occluded", "at_border")
# L2 penalty of the logistic fit, per pair: keeps weights finite when the scenes separate perfectly.
RIDGE = 1e-3


def _signed(growth_ij: float, growth_ji: float, area: float) -> tuple[float, float]:
    """Share and area-relative size of ``growth_ji - growth_ij`` (j grows behind i more: i in front)."""
    diff = growth_ji - growth_ij
    total = growth_ij + growth_ji
    return (diff / total if total else 0.0), float(np.clip(diff / max(area, 1.0), -1.0, 1.0))


def pair_features(increments: list[np.ndarray], areas: list[int], pairs: list[tuple[int, int]]) -> np.ndarray:
    """``[P, F]`` features (PAIR_FEATURES) of the candidate ``pairs`` from directed increments
    ``[N, N]`` (``occ[t, e]``: image pixels t grows behind e; dual completion's, its expected
    version, the hulls' and the local hulls', in that order) and the visible areas."""
    out = np.zeros((len(pairs), 2 * len(increments)), dtype=np.float64)
    for k, (i, j) in enumerate(pairs):
        smaller = min(areas[i], areas[j])
        for f, occ in enumerate(increments):
            out[k, 2 * f : 2 * f + 2] = _signed(occ[i, j], occ[j, i], smaller)
    return out


@dataclass(frozen=True)
class OrderFusion:
    """P(i in front of j) = sigmoid(features @ weights) for a candidate pair (i, j).

    weights: one per PAIR_FEATURES entry.
    pairs: occluded pairs of the calibration scenes it was fitted on.
    accuracy: its ordering accuracy on them; pcnet_accuracy, convex_accuracy: dual completion's and
        the convex hulls' alone on the same pairs.
    """

    weights: tuple[float, ...]
    pairs: int = 0
    accuracy: float = 0.0
    pcnet_accuracy: float = 0.0
    convex_accuracy: float = 0.0

    def probability(self, features: np.ndarray) -> np.ndarray:
        """P(i in front of j) ``[P]`` for ``[P, F]`` features."""
        return 1.0 / (1.0 + np.exp(-(features @ np.asarray(self.weights))))

    def to_json(self) -> dict:
        return {"features": list(PAIR_FEATURES), **self.__dict__, "weights": list(self.weights)}

    @classmethod
    def from_json(cls, d: dict) -> OrderFusion:
        if list(d.get("features", PAIR_FEATURES)) != list(PAIR_FEATURES):
            raise ValueError(f"fusion features {d['features']} are not this version's {list(PAIR_FEATURES)}")
        return cls(tuple(d["weights"]), d["pairs"], d["accuracy"], d["pcnet_accuracy"], d["convex_accuracy"])


def fit_logistic(x: np.ndarray, y: np.ndarray, ridge: float | np.ndarray = RIDGE, steps: int = 50) -> np.ndarray:
    """Weights of a logistic regression of ``y`` (0/1, or soft labels in [0, 1]) on ``x`` without
    intercept (Newton's method, L2 ``ridge`` per sample: one for all weights, or one per weight)."""
    w = np.zeros(x.shape[1])
    penalty = len(y) * np.diag(np.broadcast_to(np.asarray(ridge, dtype=np.float64), (x.shape[1],)))
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(x @ w)))
        grad = x.T @ (p - y) + penalty @ w
        hess = (x * (p * (1 - p))[:, None]).T @ x + penalty
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def fit_order(features: np.ndarray, front: np.ndarray) -> OrderFusion:
    """The fusion fitted on occluded pairs: ``[P, F]`` features of (i, j), ``front[P]`` True when i is
    in front. Both orientations of every pair are used, so the fit is symmetric."""
    x = np.concatenate([features, -features])
    y = np.concatenate([front, ~front]).astype(np.float64)
    w = fit_logistic(x, y)

    def accuracy(score: np.ndarray) -> float:
        return round(float(np.mean(np.where(front, score > 0, score < 0))), 4) if len(front) else 0.0

    return OrderFusion(
        tuple(round(float(v), 6) for v in w),
        len(front),
        accuracy(features @ w),
        accuracy(features[:, PAIR_FEATURES.index("pcnet_share")]),
        accuracy(features[:, PAIR_FEATURES.index("convex_share")]),
    )


def decide(
    features: np.ndarray, pairs: list[tuple[int, int]], related: np.ndarray, fusion: OrderFusion, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Order ``[N, N]`` int8 and confidence ``[N, N]`` (P that the edge's direction is right) of the
    ``pairs`` for which ``related`` is True, each directed by the fused probability."""
    order = np.zeros((n, n), dtype=np.int8)
    confidence = np.zeros((n, n), dtype=np.float32)
    p = fusion.probability(features) if len(pairs) else np.zeros(0)
    for (i, j), p_front, keep in zip(pairs, p, related):
        if not keep or p_front == 0.5:
            continue
        sign = 1 if p_front > 0.5 else -1
        order[i, j], order[j, i] = sign, -sign
        confidence[i, j] = confidence[j, i] = max(p_front, 1 - p_front)
    return order, confidence


# The IoU model's link: a logistic one keeps every estimate inside (0, 1) (a linear fit clipped to
# [0, 1] put 98 of 425 occluded objects of a real COCO file at exactly 0).
IOU_LINK = "logistic"
# Estimates are kept this far from 0 and 1, so that none rounds to a certainty.
IOU_MARGIN = 1e-4


@dataclass(frozen=True)
class IoUModel:
    """Estimated IoU of a completed mask with the truth: ``sigmoid(features @ weights)``, always
    inside (0, 1) and increasing in ``features @ weights``.

    weights: one per IOU_FEATURES entry. instances: calibration objects it was fitted on;
    mean_abs_error: its error on them.
    """

    weights: tuple[float, ...]
    instances: int = 0
    mean_abs_error: float = 0.0

    def estimate(self, features: np.ndarray) -> np.ndarray:
        """Estimated IoU ``[N]`` for ``[N, F]`` features."""
        iou = 1.0 / (1.0 + np.exp(-(features @ np.asarray(self.weights))))
        return np.clip(iou, IOU_MARGIN, 1.0 - IOU_MARGIN)

    def to_json(self) -> dict:
        return {"features": list(IOU_FEATURES), "link": IOU_LINK, **self.__dict__, "weights": list(self.weights)}

    @classmethod
    def from_json(cls, d: dict) -> IoUModel:
        if list(d.get("features", IOU_FEATURES)) != list(IOU_FEATURES):
            raise ValueError(f"IoU-model features {d['features']} are not this version's {list(IOU_FEATURES)}")
        if d.get("link") != IOU_LINK:
            raise ValueError(f"IoU-model link {d.get('link', 'linear')!r} is not this version's {IOU_LINK!r}")
        return cls(tuple(d["weights"]), d["instances"], d["mean_abs_error"])


def fit_iou(features: np.ndarray, iou: np.ndarray) -> IoUModel:
    """Logistic regression of ``iou[N]`` (the IoUs as soft labels, lightly ridged) on ``[N, F]``
    features, whose first column is the intercept."""
    ridge = np.full(features.shape[1], RIDGE)
    ridge[0] = 0.0  # the intercept is not shrunk
    w = fit_logistic(features, np.clip(iou, 0.0, 1.0), ridge)
    model = IoUModel(tuple(round(float(v), 6) for v in w), len(iou))
    error = float(np.mean(np.abs(model.estimate(features) - iou))) if len(iou) else 0.0
    return IoUModel(model.weights, len(iou), round(error, 4))


def iou_features(new_share: float, undecided: float, occluded: bool, at_border: bool) -> np.ndarray:
    """One instance's IOU_FEATURES row."""
    return np.array([1.0, new_share, undecided, float(occluded), float(at_border)])
