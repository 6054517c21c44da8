"""Models shipped inside the package, looked up by name (as segment-anything's model registry).

Each shipped model is a weights file in ``amodalize/models/weights/`` with a JSON card beside it
that records its SHA-256, its training config, the recipe of its training data and how well it did.
``--checkpoint NAME`` takes a shipped model; any other value is a path to a user's checkpoint.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from amodalize.errors import InputError

WEIGHTS = Path(__file__).parent / "weights"
# The PCNet-M used when no checkpoint is given.
DEFAULT_MODEL = "general"
# The checkpoint `--checkpoint RUN_FOLDER` means: the one `amodalize train` keeps for convert.
RUN_CHECKPOINT = "checkpoint.pt"


def shipped_models() -> list[str]:
    """Names of the models shipped with this package."""
    return sorted(p.stem for p in WEIGHTS.glob("*.json"))


def model_card(name: str) -> dict:
    """The card of shipped model ``name``: file, sha256, config, recipe, measured quality."""
    path = WEIGHTS / f"{name}.json"
    if not path.is_file():
        raise InputError(name, f"is not a shipped model (shipped: {', '.join(shipped_models()) or 'none'})")
    return json.loads(path.read_text())


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_checkpoint(name_or_path: str | Path) -> tuple[Path, str | None]:
    """(checkpoint file, shipped model name or None): a path that exists is a user's checkpoint (a
    training run's folder: its checkpoint.pt), anything else must name a shipped model, whose file
    must match its recorded SHA-256."""
    path = Path(name_or_path)
    if path.is_dir() and (path / RUN_CHECKPOINT).is_file():  # an `amodalize train` run folder
        path = path / RUN_CHECKPOINT
    if path.is_file():
        return path, None
    name = str(name_or_path)
    if path.suffix or "/" in name:
        raise InputError(name, "no such checkpoint file")
    card = model_card(name)
    weights = WEIGHTS / card["file"]
    if not weights.is_file() or file_sha256(weights) != card["sha256"]:
        raise InputError(weights, f"does not match the SHA-256 recorded for the shipped model {name!r}; reinstall")
    return weights, name
