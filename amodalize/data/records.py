"""The in-memory dataset every reader produces and everything downstream speaks."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path


@dataclass
class ImageRecord:
    """One image: COCO ``id``, size in pixels, file name, and the image dict to write back."""

    id: int
    width: int
    height: int
    file_name: str | None
    source: dict = field(default_factory=dict)


@dataclass
class Instance:
    """One annotated object; masks are compressed RLEs of the full image (see data/masks.py).

    ``modal`` is the visible mask, ``bbox`` its tight COCO box (the amodal box when the object is
    fully hidden), ``amodal`` the annotated amodal mask when the format carries one,
    ``occluded_by`` the annotated direct occluders when the format carries them, ``source``
    the annotation as read (written back untouched except for the fields amodalize sets), and
    ``clipped`` True when its polygons reach outside the image (its masks hold the part inside).
    """

    id: int
    image_id: int
    category_id: int
    modal: dict
    bbox: list[float]
    iscrowd: bool = False
    amodal: dict | None = None
    occluded_by: tuple[int, ...] | None = None
    source: dict = field(default_factory=dict)
    clipped: bool = False


@dataclass
class Dataset:
    """Images and instances of one file, with the top-level fields to keep on writing."""

    path: Path
    format: str
    images: list[ImageRecord]
    instances: list[Instance]
    categories: list[dict]
    extra: dict = field(default_factory=dict)

    @cached_property
    def by_image(self) -> dict[int, list[Instance]]:
        """Instances grouped by image id, in file order (every image present, maybe empty)."""
        groups: dict[int, list[Instance]] = defaultdict(list)
        for image in self.images:
            groups[image.id] = []
        for inst in self.instances:
            groups[inst.image_id].append(inst)
        return dict(groups)

    @property
    def has_amodal(self) -> bool:
        """True when every non-crowd instance carries an annotated amodal mask."""
        return all(i.amodal is not None for i in self.instances if not i.iscrowd)

    def subset(self, keep: list[ImageRecord]) -> Dataset:
        """The images ``keep`` with their instances, the rest of the dataset unchanged."""
        ids = {image.id for image in keep}
        instances = [i for i in self.instances if i.image_id in ids]
        return Dataset(self.path, self.format, keep, instances, self.categories, self.extra)


@dataclass
class ImageResult:
    """One image's conversion: amodal RLE per annotation id, edges (occluder id, occludee id,
    score in [0, 1], confidence in [0.5, 1] or None), the number of candidate pairs, and
    ``calibration`` = [completed area, visible area] summed over instances with nothing in front
    (their ratio should stay near 1), whether the order graph has a cycle, and the estimated IoU
    of each completed mask (``amodal_confidence``, by annotation id; empty when not estimated).
    Where input masks overlap (``infer.overlaps``): ``visible`` the visible RLE of each instance
    that lost pixels to an object in front, and ``overlaps`` the count of pairs of each kind."""

    image_id: int
    amodal: dict[int, dict] = field(default_factory=dict)
    edges: list[tuple[int, int, float, float | None]] = field(default_factory=list)
    pairs_tested: int = 0
    calibration: list[int] = field(default_factory=lambda: [0, 0])
    cyclic: bool = False
    amodal_confidence: dict[int, float] = field(default_factory=dict)
    visible: dict[int, dict] = field(default_factory=dict)
    overlaps: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict:
        """A JSON-ready dict (for resumable part files)."""
        return {
            "image_id": self.image_id,
            "amodal": {str(k): v for k, v in self.amodal.items()},
            "edges": [list(e) for e in self.edges],
            "pairs_tested": self.pairs_tested,
            "calibration": self.calibration,
            "cyclic": self.cyclic,
            "amodal_confidence": {str(k): v for k, v in self.amodal_confidence.items()},
            "visible": {str(k): v for k, v in self.visible.items()},
            "overlaps": self.overlaps,
        }

    @classmethod
    def from_json(cls, d: dict) -> ImageResult:
        """Inverse of ``to_json``."""
        return cls(
            d["image_id"],
            {int(k): v for k, v in d["amodal"].items()},
            [(int(a), int(b), float(s), c) for a, b, s, c in d["edges"]],
            d["pairs_tested"],
            list(d["calibration"]),
            bool(d["cyclic"]),
            {int(k): v for k, v in d["amodal_confidence"].items()},
            {int(k): v for k, v in d.get("visible", {}).items()},
            dict(d.get("overlaps", {})),
        )
