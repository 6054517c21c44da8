"""amodalize: self-supervised amodal masks and occlusion order from modal annotations.

The Python API (``amodalize.api``): ``convert_file`` does what ``amodalize convert`` does;
``Amodalizer`` loads PCNet-M once and completes one image's masks in memory. Both are imported on
first use, so that ``import amodalize`` (and the CLI's start-up) does not load torch.
"""

from amodalize.version import __version__

__all__ = ["Amodalizer", "Completion", "Edge", "convert_file", "__version__"]


def __getattr__(name: str) -> object:
    if name in ("Amodalizer", "Completion", "Edge", "convert_file"):
        from amodalize import api

        return getattr(api, name)
    raise AttributeError(f"module 'amodalize' has no attribute {name!r}")
