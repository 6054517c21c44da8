"""What several commands share: the console, the progress bar, path types, options declared once,
and the parsers of small option values."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from amodalize.data.formats import FORMATS

console = Console(stderr=True)
EXISTING_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
EXISTING_DIR = click.Path(exists=True, file_okay=False, path_type=Path)
OUT_DIR = click.Path(file_okay=False, path_type=Path)
OUT_FILE = click.Path(dir_okay=False, path_type=Path)


# Seconds between two progress lines when stderr is not a terminal (a log file, nohup, Slurm).
LOG_EVERY_S = 10.0


def progress_bar() -> Progress | LogProgress:
    """The progress every long command shows: a rich bar on a terminal, else plain lines in the log."""
    if not console.is_terminal:
        return LogProgress(LOG_EVERY_S)
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


@dataclass
class _Task:
    description: str
    total: float | None
    completed: float = 0.0
    visible: bool = True
    start: float = field(default_factory=time.monotonic)
    start_done: float = 0.0
    said: float = -1.0
    last: float = 0.0


class LogProgress:
    """What ``rich.progress.Progress`` shows, as plain lines for a log: ``done/total (share), rate,
    eta`` at most every ``every`` seconds, and when a task finishes (the subset of its API that the
    commands use: add_task, update, advance, reset, as a context manager)."""

    def __init__(self, every: float) -> None:
        self.every = every
        self.tasks: list[_Task] = []

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        for task in self.tasks:
            if task.visible and task.said != task.completed and exc[0] is None:
                self._say(task)

    def add_task(self, description: str, total: float | None = None, visible: bool = True, **_: object) -> int:
        self.tasks.append(_Task(description, total, visible=visible))
        return len(self.tasks) - 1

    def reset(self, task_id: int, total: float | None = None, description: str | None = None, **_: object) -> None:
        task = self.tasks[task_id]
        self.tasks[task_id] = _Task(description or task.description, total, visible=task.visible)

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, completed=self.tasks[task_id].completed + advance)

    def update(
        self,
        task_id: int,
        *,
        total: float | None = None,
        completed: float | None = None,
        description: str | None = None,
        visible: bool | None = None,
        **_: object,
    ) -> None:
        task = self.tasks[task_id]
        task.total = task.total if total is None else total
        task.description = task.description if description is None else description
        if completed is not None:
            if task.said < 0 and task.completed == 0:  # work done before this run (a resume) is not its rate
                task.start, task.start_done = time.monotonic(), completed
            task.completed = completed
        if visible is not None:
            task.visible = visible
        now = time.monotonic()
        finished = task.total is not None and task.completed >= task.total
        due = task.said < 0 or finished or now - task.last >= self.every
        if task.visible and due and task.said != task.completed:  # said < 0 until the first line
            self._say(task)

    def _say(self, task: _Task) -> None:
        task.said, task.last = task.completed, time.monotonic()
        elapsed = task.last - task.start
        rate = (task.completed - task.start_done) / elapsed if elapsed > 0 else 0.0
        done = f"{task.completed:g}"
        if task.total:
            done += f"/{task.total:g} ({100 * task.completed / task.total:.0f}%)"
        line = f"{task.description or 'working'}: {done}, {_duration(elapsed)} elapsed"
        if rate > 0:
            line += f", {rate:.3g}/s"
            if task.total and task.completed < task.total:
                line += f", eta {_duration((task.total - task.completed) / rate)}"
        console.print(escape(line), soft_wrap=True, highlight=False)


def _duration(seconds: float) -> str:
    """``seconds`` as ``12 s``, ``3 min 4 s`` or ``1 h 2 min``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


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
