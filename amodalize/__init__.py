"""amodalize: self-supervised amodal masks and occlusion order from modal annotations."""

__version__ = "0.1.0"
