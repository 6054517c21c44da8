"""`amodalize synth`: occlusion scenes with exact ground truth."""

from __future__ import annotations

from pathlib import Path

import click

from amodalize.cli.options import EXISTING_FILE, OUT_DIR, console
from amodalize.data.formats import FORMATS


@click.command()
@click.argument("out_dir", type=OUT_DIR)
@click.option("--images", "n_images", type=click.IntRange(min=1), default=100, help="Number of scenes.")
@click.option("--seed", type=int, default=0, help="Random seed; the same seed gives the same files.")
@click.option("--size", type=click.IntRange(min=32), default=256, help="Image width and height in pixels.")
@click.option("--gap", type=click.IntRange(min=0), default=0, help="Erode every visible mask by this many pixels.")
@click.option(
    "--polygon",
    type=click.FloatRange(min=0),
    default=0.0,
    metavar="PX",
    help="Redraw procedural shapes as polygons within PX pixels of their outlines, as annotators click them.",
)
@click.option("--render", is_flag=True, help="Also paint textured RGB images into OUT_DIR/images.")
@click.option(
    "--objects", default="3,7", metavar="MIN,MAX", help="Objects attempted per image (hidden ones are dropped)."
)
@click.option(
    "--kinds",
    default=None,
    metavar="KIND,...",
    help="Draw only these procedural shapes (ellipse, convex, concave, rounded_box, star, bar, ring), e.g. "
    "ellipse,convex,rounded_box for convex objects like those on a table [default: all].",
)
@click.option(
    "--shapes-from",
    "shape_files",
    multiple=True,
    type=EXISTING_FILE,
    help="Layer the objects of this annotation file (amodal masks where annotated, else visible) instead of "
    "procedural shapes; repeat for several files.",
)
@click.option(
    "--shapes-scale",
    type=click.FloatRange(min=0.1, max=10),
    default=1.0,
    help="Draw the --shapes-from objects this many times larger than their share of their own image "
    "(e.g. 2: each object twice its share of the scene's side).",
)
@click.option(
    "--categories",
    type=click.Choice(["one", "coco", "zero-based"]),
    default="one",
    show_default=True,
    help="Category ids of the objects: all 1, drawn from COCO's 80 ids (1-90), or from 0-79 as tools that "
    "count from 0 export them. The scenes are the same for each.",
)
@click.option(
    "--outlines",
    default="0,0,0",
    metavar="NESTED,THROUGH,SLIVER",
    help="Shares of objects outlined as COCO annotators outline each object alone, so that masks overlap: "
    "around the objects in front that lie inside it, through everything in front, or 1-3 px into what lies "
    "in front (e.g. 0.2,0.2,0.3); the scenes are the same for every share [default: visible masks only].",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default=None,
    help="Format of the --shapes-from files; autodetected when omitted.",
)
def synth(
    out_dir: Path,
    n_images: int,
    seed: int,
    size: int,
    gap: int,
    polygon: float,
    render: bool,
    objects: str,
    kinds: str | None,
    shape_files: tuple[Path, ...],
    shapes_scale: float,
    categories: str,
    outlines: str,
    fmt: str | None,
) -> None:
    """Generate occlusion scenes with exact ground truth into OUT_DIR.

    Writes modal.json (plain COCO, what a user has) and gt.json (COCO-amodal with occluded_by).
    Examples:

    \b
        amodalize synth demo/synth --images 50 --seed 1 --gap 1
        amodalize synth demo/real-shapes --shapes-from cocoa_val.json --size 320
    """
    from amodalize.data.formats import read_dataset
    from amodalize.data.synth import SHAPES, SynthOptions, make_dataset, shapes_from

    try:
        low, high = (int(v) for v in objects.split(","))
    except ValueError:
        raise click.BadParameter(f"expected MIN,MAX such as 2,4, got {objects!r}", param_hint="--objects") from None
    if not 1 <= low <= high:
        raise click.BadParameter(f"need 1 <= MIN <= MAX, got {objects!r}", param_hint="--objects")
    try:
        shares = tuple(float(v) for v in outlines.split(","))
    except ValueError:
        shares = ()
    if len(shares) != 3:
        raise click.BadParameter(
            f"expected NESTED,THROUGH,SLIVER such as 0.2,0.2,0.3, got {outlines!r}", param_hint="--outlines"
        )
    drawn = SHAPES if kinds is None else tuple(k.strip() for k in kinds.split(",") if k.strip())
    try:
        opts = SynthOptions(
            width=size,
            height=size,
            min_objects=low,
            max_objects=high,
            gap=gap,
            polygon=polygon,
            render=render,
            kinds=drawn,
            categories=categories,
            outlines=shares,
        )
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--outlines" if "outline" in str(e) else "--kinds") from None
    canvas = round(size * shapes_scale)
    shapes = shapes_from([read_dataset(f, fmt) for f in shape_files], canvas, canvas) if shape_files else None
    if shape_files and not shapes:
        raise click.BadParameter("the files hold no object of 16 pixels or more", param_hint="--shapes-from")
    modal, gt = make_dataset(out_dir, n_images, seed, opts, shapes)
    console.print(f"wrote {modal} and {gt}", soft_wrap=True)
