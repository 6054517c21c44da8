"""Training configurations: dataclasses loaded from YAML (``configs/``), with ``--set`` overrides.

``TrainConfig`` (PCNet-M) defaults to the reference implementation's COCOA PCNet-M settings
(reference protocol §2.1), ``ContentConfig`` (PCNet-C) to its PCNet-C settings (§5). Where the
paper and the code differ, the code's behaviour is the default (noted per field).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from amodalize.errors import InputError

# How a network takes an object's category (``model.categories``).
CATEGORY_INPUTS = ("none", "multiply")
# The value of a setting measured from the data when the run starts, and the settings that take it.
AUTO = "auto"
AUTO_FIELDS = {"data.gap"}


@dataclass
class ModelConfig:
    """The network.

    widen: UNet width factor (paper: 2, 3.35M parameters; 1 gives 0.84M).
    init: 'xavier' (the reference's xavier_normal with gain 0.02, learns slowly on small budgets)
        or 'default' (PyTorch's initialisation).
    categories: how the network takes an object's category: 'none' (the visible mask alone; a
        category id is a name, so renumbering the categories changes nothing) or 'multiply' (the
        reference's ``use_category``: the mask channel times the id; the kins preset, to reproduce
        the paper on KINS's ids 1..8; on COCOA's single id 1 the two are the same).
    """

    widen: float = 2.0
    init: str = "xavier"
    categories: str = "none"


@dataclass
class DataConfig:
    """The partial-completion sample recipe (reference protocol §2.2-2.6).

    input_size: side of the square network input in pixels (paper: 256).
    enlarge_box: crop side = max(sqrt(w*h*enlarge_box), min_side_ratio*w, min_side_ratio*h).
    min_side_ratio: see enlarge_box.
    min_box: instances whose crop side is below this many pixels are never sampled.
    shift: target crop centre jitter, as a fraction of the crop side (uniform in [-shift, shift]).
    scale_min, scale_max: crop side divided by U(scale_min, scale_max) (targets and erasers).
    flip: horizontal flip with probability 0.5 (targets and erasers independently).
    eraser_front_prob: probability of case 1 (input A minus B, eraser B); else case 2 (input A,
        eraser B minus A). The paper's gamma.
    min_overlap, max_overlap: fraction of the crop window shared with the shifted eraser window.
    min_cut_ratio, max_cut_ratio: accepted |A ∩ B| / |A| range for an eraser placement.
    max_tries: placements tried before the last one is taken anyway.
    erasers: most erasers per sample: 1 to this many (drawn uniformly) are placed over the target
        independently, each in front (case 1) or behind (case 2) on its own draw, as objects in a
        scene have several neighbours. 1 is the reference recipe.
    inmask_weight: cross-entropy weight of pixels inside the eraser (code: 5; the paper omits it).
    val_fraction: share of instances held out as validation targets.
    gap: image pixels left empty between the eraser and what remains of the target in the input
        (hand-drawn masks leave such gaps between neighbours; the target stays whole), drawn per
        sample from 0.5-1.5x this; 'auto' measures it from the training masks. 0 (the reference
        recipe) is the default: on synth scenes with 2- and 4-pixel gaps, models trained with their
        measured gap still needed the same eraser dilation at inference and ordered 0.9 and 1.3
        points worse than the gap-free recipe calibrated on the input (docs/measurements.md, "Right by default").
    """

    input_size: int = 256
    enlarge_box: float = 3.0
    min_side_ratio: float = 1.1
    min_box: float = 5.0
    shift: float = 0.2
    scale_min: float = 0.8
    scale_max: float = 1.2
    flip: bool = True
    eraser_front_prob: float = 0.8
    min_overlap: float = 0.4
    max_overlap: float = 1.0
    min_cut_ratio: float = 0.001
    max_cut_ratio: float = 0.9
    max_tries: int = 100
    erasers: int = 1
    inmask_weight: float = 5.0
    val_fraction: float = 0.05
    gap: float | str = 0.0


@dataclass
class OptimConfig:
    """Optimisation.

    optimizer: 'sgd' (momentum) or 'adam'.
    lr: base learning rate.
    momentum: SGD momentum.
    weight_decay: L2 weight decay.
    schedule: 'step' (lr x gamma at each milestone), 'cosine' (to 0 at iters) or 'constant'.
    milestones: iterations of the step schedule (COCOA: 32000, 48000).
    gamma: step schedule factor.
    iters: training iterations (COCOA: 56000; KINS: 32000).
    batch_size: global batch, split evenly across torchrun processes (paper: 256).
    """

    optimizer: str = "sgd"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "step"
    milestones: list[int] = field(default_factory=lambda: [32000, 48000])
    gamma: float = 0.1
    iters: int = 56000
    batch_size: int = 256


@dataclass
class RunConfig:
    """Everything about running, not learning.

    seed: seeds the instance split, every sample and the initialisation.
    workers: DataLoader worker processes per training process (0: load in the main process).
    threads: torch CPU threads (0: torch's default).
    checkpoint_every: iterations between checkpoints (one is also written at the end).
    val_every: iterations between validations (0: only at the end).
    val_samples: validation samples drawn from the held-out instances.
    log_every: iterations between lines of log.jsonl.
    amp: bfloat16 autocast on CUDA.
    channels_last: channels-last memory format on CUDA.
    calibration_samples: synthetic occlusions of held-out instances on which the thresholds and
        eraser dilation are chosen after training (PCNet-M; 0: no calibration).
    """

    seed: int = 0
    workers: int = 2
    threads: int = 0
    checkpoint_every: int = 2000
    val_every: int = 2000
    val_samples: int = 256
    log_every: int = 20
    amp: bool = True
    channels_last: bool = True
    calibration_samples: int = 300


SCHEDULES = ("step", "cosine", "constant")


def _check_choices(choices: list[tuple[str, str, tuple[str, ...]]]) -> None:
    """Raise ValueError for the first ``(name, value, allowed)`` whose value is not allowed."""
    for name, value, allowed in choices:
        if value not in allowed:
            raise ValueError(f"{name} is {value!r}; choose from {', '.join(allowed)}")


def _check_lengths(iters: int, batch_size: int, val_fraction: float) -> None:
    """Raise ValueError unless the run has steps and samples and a proper validation share."""
    if iters <= 0 or batch_size <= 0:
        raise ValueError("optim.iters and optim.batch_size must be positive")
    if not 0 < val_fraction < 1:
        raise ValueError(f"data.val_fraction must lie in (0, 1), got {val_fraction}")


@dataclass
class TrainConfig:
    """A full PCNet-M training configuration (sections: model, data, optim, run)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def validate(self) -> None:
        """Raise ValueError naming the first impossible setting."""
        o, d = self.optim, self.data
        _check_choices(
            [
                ("optim.optimizer", o.optimizer, ("sgd", "adam")),
                ("optim.schedule", o.schedule, SCHEDULES),
                ("model.init", self.model.init, ("xavier", "default")),
                ("model.categories", self.model.categories, CATEGORY_INPUTS),
            ]
        )
        if d.input_size % 16:
            raise ValueError(f"data.input_size must be a multiple of 16, got {d.input_size}")
        if d.erasers < 1:
            raise ValueError(f"data.erasers must be at least 1, got {d.erasers}")
        _check_lengths(o.iters, o.batch_size, d.val_fraction)


@dataclass
class ContentModelConfig:
    """The PCNet-C networks (reference: base 64, depth 7, max_width 512, disc_base 64; ~25.8M +
    2.76M parameters at 256 px).

    base: channels of the generator's first partial convolution (doubling per level).
    depth: generator levels (input side / 2**depth is the bottleneck side; at most log2(input_size)).
    max_width: cap on the generator's channels.
    disc_base: channels of the discriminator's first convolution.
    categories: how the generator takes an object's category, as PCNet-M's ``model.categories``.
    """

    base: int = 64
    depth: int = 7
    max_width: int = 512
    disc_base: int = 64
    categories: str = "none"


@dataclass
class ContentOptimConfig:
    """PCNet-C optimisation: Adam for both networks, generator first, then discriminator.

    lr: generator learning rate (reference: 1e-4).
    d_lr: discriminator learning rate (reference: 1e-5, d2g_lr 0.1).
    betas: Adam betas of both optimisers (reference: (0.0, 0.9) for the discriminator).
    schedule, milestones, gamma: as in PCNet-M's optim section (reference: constant).
    iters: training iterations (reference: 450,000).
    batch_size: global batch, split evenly across torchrun processes (reference: 128).
    """

    lr: float = 1e-4
    d_lr: float = 1e-5
    betas: list[float] = field(default_factory=lambda: [0.0, 0.9])
    schedule: str = "constant"
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    iters: int = 450000
    batch_size: int = 128


@dataclass
class LossConfig:
    """PCNet-C loss weights (reference protocol §5). Perceptual and style need VGG16 weights
    (``--perceptual-weights``) and are skipped without them.

    hole: L1 inside the erased region. valid: L1 outside it. adversarial: non-saturating GAN loss
    of the generator. perceptual: L1 between VGG16 pool1-3 features. style: L1 between their Gram
    matrices. tv: total variation of the composite around the hole.
    """

    hole: float = 6.0
    valid: float = 1.0
    adversarial: float = 0.1
    perceptual: float = 0.1
    style: float = 250.0
    tv: float = 0.1


@dataclass
class ContentConfig:
    """A full PCNet-C training configuration (sections: model, data, optim, loss, run).

    The data section is PCNet-M's sample recipe; ``eraser_front_prob`` and ``inmask_weight`` are
    unused (PCNet-C always erases A ∩ B).
    """

    model: ContentModelConfig = field(default_factory=ContentModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: ContentOptimConfig = field(default_factory=ContentOptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def validate(self) -> None:
        """Raise ValueError naming the first impossible setting."""
        o, d, m = self.optim, self.data, self.model
        _check_choices([("optim.schedule", o.schedule, SCHEDULES), ("model.categories", m.categories, CATEGORY_INPUTS)])
        if d.input_size % 2**m.depth:
            raise ValueError(f"data.input_size {d.input_size} must be a multiple of 2**model.depth = {2**m.depth}")
        if len(o.betas) != 2:
            raise ValueError(f"optim.betas must hold two numbers, got {o.betas}")
        _check_lengths(o.iters, o.batch_size, d.val_fraction)


AnyConfig = TrainConfig | ContentConfig


def to_dict(cfg: AnyConfig) -> dict:
    """The config as plain nested dicts (for YAML and checkpoints)."""
    return dataclasses.asdict(cfg)


def from_dict(raw: dict, source: str = "config", kind: type = TrainConfig) -> AnyConfig:
    """Build a ``kind`` config from nested dicts, rejecting unknown sections, keys and mistyped values."""
    cfg = kind()
    sections = ", ".join(f.name for f in dataclasses.fields(cfg))
    for section, values in (raw or {}).items():
        if not hasattr(cfg, section) or not isinstance(values, dict):
            raise InputError(source, f"unknown config section {section!r} (sections: {sections})")
        for key, value in values.items():
            _assign(cfg, f"{section}.{key}", value, source)
    return cfg


def _assign(cfg: AnyConfig, dotted: str, value: object, source: str) -> None:
    section, _, key = dotted.partition(".")
    target = getattr(cfg, section, None)
    if target is None or not key or not hasattr(target, key):
        raise InputError(source, f"unknown config key {dotted!r}")
    current = getattr(target, key)
    auto = dotted in AUTO_FIELDS
    if auto:  # 'auto' or a non-negative number
        ok = value == AUTO or (isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0)
        value = value if value == AUTO or not ok else float(value)
    elif isinstance(current, bool):
        ok = isinstance(value, bool)
    elif isinstance(current, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(current, list):
        ok = isinstance(value, list)
    else:
        ok = isinstance(value, type(current)) and not isinstance(value, bool)
    if not ok:
        kind = "'auto' or a number >= 0" if auto else type(current).__name__
        raise InputError(source, f"{dotted} must be {kind}, got {value!r}")
    setattr(target, key, value)


# The folder of each kind's presets, under ``presets_dir()``.
PRESET_FOLDERS = {TrainConfig: "pcnet_m", ContentConfig: "pcnet_c"}


def presets_dir() -> Path:
    """The shipped YAML presets: ``amodalize/presets`` in an installed package, ``configs/`` in a checkout."""
    installed = Path(__file__).parent / "presets"
    return installed if installed.is_dir() else Path(__file__).resolve().parents[1] / "configs"


def preset_names(kind: type = TrainConfig) -> list[str]:
    """Names of the presets of ``kind`` (e.g. 'cpu-small', 'cocoa')."""
    return sorted(p.stem for p in (presets_dir() / PRESET_FOLDERS[kind]).glob("*.yaml"))


# Training throughput measured per preset (samples/s, on what), for the expected run length.
MEASURED_SPEED = {
    "pcnet_m/cpu-small": (135.0, "2 CPU cores"),
    "pcnet_c/cpu-small": (130.0, "2 CPU cores"),
    "pcnet_m/cocoa": (954.0, "one H200 GPU (scripts/gpu_check.py)"),
    "pcnet_m/kins": (954.0, "one H200 GPU (scripts/gpu_check.py)"),
    "pcnet_c/cocoa": (287.0, "one H200 GPU (scripts/gpu_check.py)"),
}


def default_preset(device_type: str, kind: type = TrainConfig) -> str:
    """The preset for a run without ``--config``: the small one on CPU, the paper's on CUDA."""
    return f"{PRESET_FOLDERS[kind]}/{'cocoa' if device_type == 'cuda' else 'cpu-small'}"


# A PCNet-M run on a CPU without --config, --init or a --set of the network's shape fine-tunes the
# shipped model for this many steps instead of training the preset from scratch: on real-outline
# scenes and on synth with a 1-px gap it ordered and completed better than both the shipped model
# alone and the full 1,400 steps from scratch, in a quarter of the time (docs/measurements.md,
# "Fine-tuning").
DEFAULT_INIT = ("pcnet_m/cpu-small", "general", 300)


def default_init(preset: str) -> tuple[str, int] | None:
    """(shipped model, steps) that a run of ``preset`` without --config or --init fine-tunes, if any."""
    return DEFAULT_INIT[1:] if preset == DEFAULT_INIT[0] else None


def preset_note(name: str, kind: type = TrainConfig) -> str:
    """What running preset ``name`` means: its length and, where measured, its expected duration."""
    o = load_config(name, kind=kind).optim
    note = f"{o.iters:,} steps of {o.batch_size} samples"
    speed = MEASURED_SPEED.get(name)
    if speed:
        hours = o.iters * o.batch_size / speed[0] / 3600
        length = f"{hours * 60:.0f} min" if hours < 2 else f"{hours:.0f} h"
        note += f", about {length} at the {speed[0]:,.0f} samples/s measured on {speed[1]}"
    return note


def resolve_config(name: str | Path, kind: type = TrainConfig) -> Path:
    """A config file path: ``name`` itself when it is a file, else the preset of that name
    ('cpu-small', 'pcnet_m/cocoa', 'pcnet_c/cpu-small'; '.yaml' optional)."""
    if Path(name).is_file():
        return Path(name)
    folder, _, stem = str(name).removesuffix(".yaml").rpartition("/")
    folder = folder or PRESET_FOLDERS[kind]
    path = presets_dir() / folder / f"{stem}.yaml"
    if folder not in PRESET_FOLDERS.values() or not path.is_file():
        names = ", ".join(preset_names(kind))
        raise InputError(name, f"is neither a config file nor a preset (presets: {names})")
    return path


def load_config(path: str | Path | None, overrides: list[str] = (), kind: type = TrainConfig) -> AnyConfig:
    """Read a ``kind`` YAML config (a file or a preset name; defaults when ``path`` is None) and
    apply ``key=value`` overrides."""
    raw = {}
    if path is not None:
        path = resolve_config(path, kind)
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as e:
            raise InputError(path, f"not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(raw, dict):
            raise InputError(path, "a config must be a mapping of sections")
    cfg = from_dict(raw, str(path or "config"), kind)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise InputError("--set", f"expected key=value, got {item!r}")
        _assign(cfg, key.strip(), yaml.safe_load(text), "--set")
    try:
        cfg.validate()
    except ValueError as e:
        raise InputError(path or "config", str(e)) from None
    return cfg
