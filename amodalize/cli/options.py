"""What several commands share: the console, the progress bar, path types, options declared once,
and the parsers of small option values."""

from __future__ import annotations

import os
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from amodalize.data.formats import FORMATS

console = Console(stderr=True)
EXISTING_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
EXISTING_DIR = click.Path(exists=True, file_okay=False, path_type=Path)
OUT_DIR = click.Path(file_okay=False, path_type=Path)
OUT_FILE = click.Path(dir_okay=False, path_type=Path)


def progress_bar() -> Progress:
    """The rich progress bar every long command uses."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


class AutoOrCount(click.ParamType):
    """'auto' or an integer >= 0."""

    name = "auto|K"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> object:
        if value == "auto" or isinstance(value, int) and value >= 0:
            return value
        if isinstance(value, str) and value.isdigit():
            return int(value)
        self.fail(f"expected 'auto' or a whole number >= 0, got {value!r}", param, ctx)


ORDER_TH_OPTION = click.option(
    "--order-th",
    type=click.FloatRange(0, 1),
    default=None,
    help="PCNet-M foreground threshold for ordering [default: the checkpoint's calibration, else 0.1].",
)
AMODAL_TH_OPTION = click.option(
    "--amodal-th",
    type=click.FloatRange(0, 1),
    default=None,
    help="PCNet-M foreground threshold for completion [default: the checkpoint's calibration, else 0.2].",
)
ERASER_DILATE_OPTION = click.option(
    "--eraser-dilate",
    type=AutoOrCount(),
    default="auto",
    help="Grow erasers by K pixels and let the touching test bridge K-pixel gaps. auto: measure the gap "
    "between neighbouring masks and use the calibrated dilation for it; 0: the reference.",
)
FORMAT_OPTION = click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default=None,
    help="Input format; autodetected when omitted.",
)
IMAGE_IDS_OPTION = click.option("--images", "image_ids", default=None, help="Comma-separated image ids (default: all).")
GT_ORDER_OPTION = click.option(
    "--gt-order",
    type=click.Choice(["masks", "annotated"]),
    default="masks",
    help="GT order from the masks of touching pairs (the reference protocol) or from annotations.",
)
JSON_OPTION = click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object on stdout instead of a table."
)


def device_option(help: str = "auto: CUDA when available.") -> click.Option:
    """``--device auto|cpu|cuda``."""
    return click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", help=help)


DEVICE_OPTION = device_option()


def images_dir_option(help: str, required: bool = False) -> click.Option:
    """``--images-dir``: an existing folder of image files."""
    return click.option("--images-dir", type=EXISTING_DIR, required=required, default=None, help=help)


def run_dir_option(help: str) -> click.Option:
    """``--out``: the run directory a command writes (required)."""
    return click.option("--out", "run_dir", required=True, type=OUT_DIR, help=help)


def shard_option(help: str) -> click.Option:
    """``--shard K/N``."""
    return click.option("--shard", type=str, default=None, metavar="K/N", help=help)


def parse_shard(text: str) -> tuple[int, int]:
    """``K/N`` as (K, N) with 0 <= K < N."""
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise click.BadParameter(f"expected K/N such as 0/4, got {text!r}", param_hint="--shard") from None
    if not 0 <= k < n:
        raise click.BadParameter(f"K must lie in 0..N-1, got {text!r}", param_hint="--shard")
    return k, n


def torchrun_world() -> tuple[int, int]:
    """(world size, rank) under torchrun; (1, 0) otherwise."""
    return int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))


def shard_of(shard: str | None) -> tuple[int, int] | None:
    """The shard to run: ``--shard K/N`` where given, else this process's rank of a torchrun world, else all."""
    world, rank = torchrun_world()
    if shard is not None:
        return parse_shard(shard)
    return (rank, world) if world > 1 else None


def parse_ids(text: str | None, option: str) -> list[int] | None:
    """Comma-separated integers (None for none given)."""
    try:
        return [int(v) for v in text.split(",")] if text else None
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}", param_hint=option) from None


def parse_pair(text: str, option: str, example: str) -> tuple[int, int]:
    """Two comma-separated integers."""
    try:
        a, b = (int(v) for v in text.split(","))
    except ValueError:
        raise click.BadParameter(f"expected something like {example}, got {text!r}", param_hint=option) from None
    return a, b
