"""The method tables: one name each, shared by ConvertOptions and the CLI."""

import pytest

from amodalize.infer.convert import ConvertOptions
from tests.conftest import invoke


def test_methods_are_named_once_for_options_and_cli():
    from amodalize.infer.methods import AMODAL_METHODS, ORDER_METHODS

    with pytest.raises(ValueError, match=", ".join(AMODAL_METHODS)):
        ConvertOptions("hull")
    with pytest.raises(ValueError, match=", ".join(ORDER_METHODS)):
        ConvertOptions("raw", "depth")
    said = " ".join(invoke(["convert", "--help"]).stdout.split())
    assert f"[{'|'.join(AMODAL_METHODS)}]" in said and f"[{'|'.join(ORDER_METHODS)}]" in said
