"""The ``amodalize`` command line: each command parses options, calls one function and reports.

Status and progress go to stderr; stdout only carries machine-readable results (``--json``). One
module per command group; this one holds the top-level group, which turns errors into one line.
"""

from __future__ import annotations

import click
from rich.markup import escape

from amodalize.cli.convert import convert, merge
from amodalize.cli.evaluate import evaluate, report, visualize
from amodalize.cli.export import export, import_
from amodalize.cli.maskrcnn import maskrcnn
from amodalize.cli.options import console
from amodalize.cli.scene import deocclude, recompose
from amodalize.cli.synth import synth
from amodalize.cli.train import train
from amodalize.errors import AmodalizeError
from amodalize.version import __version__


class _Group(click.Group):
    """Turns AmodalizeError into one line on stderr and its exit code; real bugs keep their traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except AmodalizeError as e:
            console.print(f"[bold red]error:[/] {escape(str(e))}", soft_wrap=True)
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            console.print(
                "[bold red]interrupted:[/] finished work is kept; run the same command again to continue "
                "(train: add --resume)",
                soft_wrap=True,
            )
            ctx.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="amodalize")
def cli() -> None:
    """Turn modal instance annotations into amodal masks and pairwise occlusion order.

    Typical use: `amodalize convert modal.json amodal.json`, then
    `amodalize evaluate amodal.json gt.json` where ground truth exists.
    """


for command in (
    convert,
    merge,
    evaluate,
    visualize,
    report,
    export,
    import_,
    synth,
    train,
    deocclude,
    recompose,
    maskrcnn,
):
    cli.add_command(command)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="amodalize")
