"""Where every setting of a conversion is decided: the request a user makes (``ConvertRequest``,
checked when it is made), the PCNet-M it names (``load_completer``) and the policy that turns
the request into ``ConvertOptions`` on the data at hand (``decide``).

``convert``, the Python API, ``deocclude`` and the scripts all come here; ``pipeline`` only reads
and writes files. The order of precedence: the reference protocol's settings with ``reference``;
else explicit values; else the checkpoint's calibration made at the measured gap; else a
calibration on the input's own instances (no ground truth needed); else the reference thresholds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from amodalize.config import AUTO, DataConfig
from amodalize.data.bank import InstanceBank, build_bank
from amodalize.data.gaps import estimate_gap, modal_groups
from amodalize.data.masks import rle_area
from amodalize.data.records import Dataset
from amodalize.errors import InputError
from amodalize.infer.batcher import Completer, default_batch_size, keep_freed_memory, resolve_device
from amodalize.infer.calibrate import calibrate, fit_fusion, fusion_scenes
from amodalize.infer.convert import ConvertOptions, check_settings
from amodalize.infer.fusion import IoUModel, OrderFusion
from amodalize.infer.methods import AMODAL_METHODS, ORDER_METHODS
from amodalize.models.pcnet_m import load_pcnet_m
from amodalize.models.registry import DEFAULT_MODEL, file_sha256, resolve_checkpoint
from amodalize.models.unet import fold_batchnorm, freeze_for_cpu

# Test-time augmentation of PCNet-M queries unless asked otherwise (docs/measurements.md, "Better than geometry").
DEFAULT_TTA = "flip"
TTA_MODES = ("flip", "none")
# The reference test protocol (reference protocol §6.1): every setting `convert --reference` fixes.
REFERENCE_SETTINGS = {
    "order_th": 0.1,
    "amodal_th": 0.2,
    "eraser_dilate": 0,
    "keep_visible": False,
    "clip_to_occluders": False,
    "completion_resize": "bilinear",
    "paste_resize": "binary",
    "complete_empty": True,
    "recentre": 0,
    "grow_to_occluders": 0,
    "max_aspect": 0,
}
# What fitting the fusion on the input buys over a shipped model's own (docs/measurements.md,
# "A predictor that decides once").
FITTED_ON_INPUT = "ordering +0.2 to +2.0 points over the shipped model's own fusion on touching masks, for about 2 s"
# Images whose instances a calibration on the input draws from, at most.
CALIBRATION_IMAGES = 400
# Defaults for a checkpoint with no calibration (reference checkpoints, older amodalize ones).
UNCALIBRATED = {"order_th": 0.1, "amodal_th": 0.2}
# The settings a calibration decides where they are not given (None or 'auto').
CALIBRATED = ("order_th", "amodal_th", "eraser_dilate")


@dataclass(frozen=True)
class ConvertRequest:
    """What a user asks of a conversion, before anything is decided on the data.

    method: amodal completion, a name of ``infer.methods.AMODAL_METHODS``.
    order: ordering method, a name of ``infer.methods.ORDER_METHODS``; None: with a model (method
        pcnet or a checkpoint given) the learned protocol's (fused; pcnet with ``reference``),
        else convex.
    checkpoint: PCNet-M: a shipped model's name, a checkpoint path, or None for the shipped default.
    reference: the reference test protocol: every setting of REFERENCE_SETTINGS, one view.
    tta: test-time augmentation of PCNet-M queries, 'flip' or 'none' (None: DEFAULT_TTA; 'none'
        with ``reference``).
    settings: further ``ConvertOptions`` fields as given; ``order_th``/``amodal_th`` None and
        ``eraser_dilate`` 'auto' (or absent) are decided by ``decide``.

    A misspelt setting or an unknown method raises InputError here, where it is given.
    """

    method: str = "pcnet"
    order: str | None = None
    checkpoint: str | Path | None = None
    reference: bool = False
    tta: str | None = None
    settings: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in AMODAL_METHODS:
            raise InputError("method", f"unknown method {self.method!r}; the methods are {', '.join(AMODAL_METHODS)}")
        if self.order is not None and self.order not in ORDER_METHODS:
            raise InputError("order", f"unknown order {self.order!r}; the orders are {', '.join(ORDER_METHODS)}")
        if self.tta is not None and self.tta not in TTA_MODES:
            raise InputError("tta", f"unknown tta {self.tta!r}; it is one of {', '.join(TTA_MODES)}")
        check_settings(self.settings)
        object.__setattr__(self, "settings", dict(self.settings))

    @classmethod
    def split(cls, options: Mapping[str, object], others: Collection[str]) -> tuple[ConvertRequest, dict]:
        """The request made of keyword ``options`` as ``convert`` and the API take them (this class's
        fields and ConvertOptions fields), and the rest, which must be named in ``others`` (file
        and device options): InputError names any option that is neither."""
        own = {f.name for f in dataclasses.fields(cls)} - {"settings"}
        known = {f.name for f in dataclasses.fields(ConvertOptions)} - {"method", "order"}
        unknown = sorted(set(options) - own - known - set(others))
        if unknown:
            names = ", ".join(sorted(own | known | set(others)))
            raise InputError("options", f"unknown option {', '.join(unknown)}; the options are {names}")
        request = {k: v for k, v in options.items() if k in own and v is not None}
        settings = {k: v for k, v in options.items() if k in known}
        return cls(**request, settings=settings), {k: v for k, v in options.items() if k in others}

    @property
    def uses_model(self) -> bool:
        """True when a checkpoint was named or the completion is PCNet-M's."""
        return self.method == "pcnet" or self.checkpoint is not None

    @property
    def order_method(self) -> str:
        """The ordering method: as given, else the learned protocol's with a model, else convex."""
        if self.order is not None:
            return self.order
        if not self.uses_model:
            return "convex"
        return "pcnet" if self.reference else "fused"

    @property
    def tta_mode(self) -> str:
        """The test-time augmentation of PCNet-M queries: none for the reference protocol."""
        return "none" if self.reference else self.tta or DEFAULT_TTA

    @property
    def needs_model(self) -> bool:
        """True when completion or ordering queries PCNet-M."""
        return self.method == "pcnet" or self.order_method in ("pcnet", "fused")


def load_completer(
    checkpoint: str | Path | None,
    device: str = "auto",
    batch_size: int | None = None,
    fold: bool = True,
    freeze: bool = True,
    tta: str = DEFAULT_TTA,
) -> tuple[Completer, dict]:
    """A Completer for a PCNet-M checkpoint (a path, the name of a shipped model, or None for the
    default shipped one) and its provenance record (with its calibration). ``fold`` folds the
    BatchNorms into the convolutions (the same up to float rounding); ``freeze`` runs the model as
    frozen TorchScript on CPU (the same outputs, faster); ``tta`` is the test-time augmentation."""
    path, shipped = resolve_checkpoint(checkpoint or DEFAULT_MODEL)
    loaded = load_pcnet_m(path)
    dev = resolve_device(device)
    batch = batch_size or default_batch_size(dev, loaded.input_size)
    model = fold_batchnorm(loaded.model) if fold else loaded.model
    if dev.type == "cpu":
        keep_freed_memory()
        if freeze:
            model = freeze_for_cpu(model, loaded.input_size)
    completer = Completer(
        model, loaded.input_size, device=dev, batch_size=batch, amp=False, tta=tta, categories=loaded.categories
    )
    info = {
        "path": str(path),
        "shipped_model": shipped,
        "sha256": file_sha256(path),
        "kind": loaded.kind,
        "input_size": loaded.input_size,
        "calibration": loaded.calibration,
        "gap_calibrations": list(loaded.gap_calibrations),
        "tta": tta,
        "categories": loaded.categories,
        "categories_seen": None if loaded.categories_seen is None else list(loaded.categories_seen),
    }
    return completer, info


def decide(
    request: ConvertRequest, dataset: Dataset | None, completer: Completer | None, ckpt_info: dict | None
) -> tuple[ConvertOptions, dict]:
    """ConvertOptions with every setting of ``request`` decided, and a record of how: on ``dataset``
    as ``convert`` decides them on its input (``_on_data``), or with no data from the checkpoint
    alone, for touching masks (``_from_checkpoint``, what a predictor given no sample uses)."""
    method, order = request.method, request.order_method
    if request.reference:
        settings = {**request.settings, **REFERENCE_SETTINGS}
        return ConvertOptions(method, order, **settings), {"source": "reference protocol"}
    settings = {"eraser_dilate": AUTO, **request.settings}
    if dataset is None:
        return _from_checkpoint(method, order, settings, completer, ckpt_info)
    return _on_data(dataset, method, order, settings, completer, ckpt_info)


def _on_data(
    dataset: Dataset, method: str, order: str, settings: dict, completer: Completer | None, ckpt_info: dict | None
) -> tuple[ConvertOptions, dict]:
    """The gap between neighbouring masks is measured on the input; thresholds and dilation come
    from the checkpoint's calibration when it was made at that gap, else from a calibration on the
    input's own instances; checkpoints without calibration keep the reference thresholds and
    bridge the gap. For fused ordering the fusion and IoU model are decided too (``_with_fusion``)."""
    wanted = [k for k in CALIBRATED if settings.get(k) in (None, AUTO)]
    record: dict = {"source": "flags" if not wanted else None}
    gap = 0
    if settings.get("eraser_dilate") == AUTO:
        measured = estimate_gap(modal_groups(dataset))
        gap = measured.gap
        record["gap"] = measured.to_json()
    if completer is None:
        settings.update({k: UNCALIBRATED.get(k, gap) for k in wanted})
        record["source"] = record["source"] or "no model"
        return ConvertOptions(method, order, gap=gap, **settings), record
    if not wanted:
        return _with_fusion(dataset, ConvertOptions(method, order, gap=gap, **settings), None, completer, record)
    cal = ckpt_info.get("calibration")
    stored = _calibration_at(ckpt_info, gap)
    if cal is not None and (cal["gap"] == gap or "eraser_dilate" not in wanted):
        record["source"] = "the checkpoint's calibration"
    elif stored is not None:
        cal = stored
        record["source"] = f"the checkpoint's calibration at gap {gap} px"
    elif cal is not None:
        bank = input_bank(dataset)
        everyone = np.arange(len(bank))
        data = DataConfig(input_size=completer.input_size, gap=gap, enlarge_box=settings.get("enlarge", 3.0))
        samples = calibration_samples(completer)
        cal = calibrate(bank, everyone, everyone, data, gap, completer, samples=samples).to_json()
        record["source"] = (
            f"a calibration on the input (the checkpoint's was made at gap {ckpt_info['calibration']['gap']} px)"
        )
    else:
        cal = {**UNCALIBRATED, "eraser_dilate": gap}
        record["source"] = "reference thresholds (the checkpoint has no calibration)"
    record["calibration"] = cal
    settings.update({k: cal[k] for k in wanted})
    # a shipped model's fusion was fitted on its procedural training shapes: the input's own fit better
    stored = None if ckpt_info.get("shipped_model") else cal
    opts, record = _with_fusion(dataset, ConvertOptions(method, order, gap=gap, **settings), stored, completer, record)
    if stored is not cal and record.get("fusion") is not None:
        record["fusion_note"] = FITTED_ON_INPUT
    return opts, record


def _from_checkpoint(
    method: str, order: str, settings: dict, completer: Completer, ckpt_info: dict
) -> tuple[ConvertOptions, dict]:
    """Touching masks (gap 0): the thresholds, dilation, fusion and IoU model of the checkpoint's
    calibration at gap 0 where it has one (the shipped model's fusion was fitted on its training
    shapes), else the reference thresholds and dual completion alone."""
    wanted = [k for k in CALIBRATED if settings.get(k) in (None, AUTO)]
    cal = ckpt_info.get("calibration")
    if cal is None or cal["gap"] != 0:
        cal = _calibration_at(ckpt_info, 0)
    record: dict = {"gap": "0 px assumed (no data given: touching masks)"}
    if cal is None:
        settings.update({k: UNCALIBRATED.get(k, 0) for k in wanted})
        record["source"] = "reference thresholds (the checkpoint has no calibration at gap 0 px)"
    else:
        settings.update({k: cal[k] for k in wanted})
        record.update(source="the checkpoint's calibration at gap 0 px", calibration=cal)
    return _with_fusion(None, ConvertOptions(method, order, gap=0, **settings), cal, completer, record)


def _calibration_at(ckpt_info: dict, gap: int) -> dict | None:
    """The checkpoint's stored calibration made at ``gap`` px (besides its main one), if any."""
    return next((c for c in ckpt_info.get("gap_calibrations", []) if c["gap"] == gap), None)


def _with_fusion(
    dataset: Dataset | None, opts: ConvertOptions, cal: dict | None, completer: Completer, record: dict
) -> tuple[ConvertOptions, dict]:
    """``opts`` with the ordering fusion and IoU model: the calibration's when it was fitted at the
    settings and gap in use (on the model's training data: the user's own), else fitted now on
    scenes of the input's own shapes (none without a ``dataset``: dual completion alone)."""
    if opts.fusion is not None or opts.order != "fused":
        return opts, record
    if _fusion_fits(cal, opts):
        fusion, iou_model = cal["fusion"], cal["iou_model"]
        record["fusion_source"] = "the calibration's"
    elif dataset is None:
        record["fusion_source"] = "none: the checkpoint holds none at these settings (dual completion alone)"
        return opts, record
    else:
        bank = input_bank(dataset)
        scenes = fusion_scenes(bank, calibration_samples(completer))
        fitted = fit_fusion(bank, opts.gap, completer, opts, n=scenes)
        if fitted is None:
            record["fusion_source"] = "none: the input's shapes make no occluded pair to fit on"
            return opts, record
        fusion, iou_model = fitted
        record.update(fusion_source="fitted on scenes of the input's own shapes", fusion=fusion, iou_model=iou_model)
    iou_weights = tuple(iou_model["weights"]) if opts.method == "pcnet" else None
    return dataclasses.replace(opts, fusion=tuple(fusion["weights"]), iou_model=iou_weights), record


def _fusion_fits(cal: dict | None, opts: ConvertOptions) -> bool:
    """True when ``cal`` holds a fusion and IoU model fitted at ``opts``'s thresholds, dilation and
    gap, with this version's features."""
    if cal is None or not cal.get("fusion") or cal["gap"] != opts.gap:
        return False
    if any(cal[k] != getattr(opts, k) for k in CALIBRATED):
        return False
    try:
        OrderFusion.from_json(cal["fusion"])
        IoUModel.from_json(cal["iou_model"])
    except ValueError:  # fitted on the features of an earlier version
        return False
    return True


def input_bank(dataset: Dataset) -> InstanceBank:
    """The instances of at most CALIBRATION_IMAGES images with a visible mask, spread over the input,
    to calibrate on."""
    images = [im for im in dataset.images if any(rle_area(i.modal) for i in dataset.by_image[im.id] if not i.iscrowd)]
    step = max(1, len(images) // CALIBRATION_IMAGES)
    return build_bank([dataset.subset(images[::step])])


def calibration_samples(completer: Completer) -> int:
    """Scenes for calibrating on the input: fewer where each query is expensive (a large model on CPU)."""
    return 300 if completer.device.type == "cuda" or completer.input_size <= 64 else 100


def settings_record(opts: ConvertOptions) -> dict:
    """The settings a conversion records in ``info.amodalize.settings``: every option but the methods."""
    return {k: v for k, v in opts.__dict__.items() if k not in ("method", "order")}
