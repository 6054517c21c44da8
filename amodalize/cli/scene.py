"""`amodalize deocclude` (a scene taken apart into RGBA layers) and `amodalize recompose` (edits)."""

from __future__ import annotations

from pathlib import Path

import click

from amodalize.cli.options import (
    AMODAL_TH_OPTION,
    DEVICE_OPTION,
    ERASER_DILATE_OPTION,
    EXISTING_DIR,
    EXISTING_FILE,
    FORMAT_OPTION,
    IMAGE_IDS_OPTION,
    ORDER_TH_OPTION,
    OUT_DIR,
    OUT_FILE,
    console,
    images_dir_option,
    parse_ids,
    parse_pair,
    progress_bar,
    shard_of,
    shard_option,
)


@click.command()
@click.argument("ann_json", type=EXISTING_FILE)
@click.argument("out_dir", type=OUT_DIR)
@images_dir_option("Folder of the images of ANN_JSON.", required=True)
@click.option("--checkpoint-c", type=EXISTING_FILE, required=True, help="PCNet-C checkpoint (train --model pcnet-c).")
@click.option(
    "--checkpoint-m",
    default=None,
    metavar="NAME|PATH",
    help="PCNet-M (shipped model name or checkpoint) for the amodal masks and order [default: ANN_JSON's own "
    "amodal masks where it has them (a convert output, amodal ground truth), else the shipped model 'general'].",
)
@IMAGE_IDS_OPTION
@ORDER_TH_OPTION
@AMODAL_TH_OPTION
@ERASER_DILATE_OPTION
@click.option(
    "--hole-dilate",
    type=click.IntRange(min=0),
    default=5,
    help="Repaint this far (pixels of a 256-px object crop) into the visible part around each hidden part.",
)
@click.option(
    "--background-dilate",
    type=click.IntRange(min=0),
    default=4,
    help="Repaint this far (pixels at a 384-px image side) around every object in the background.",
)
@click.option(
    "--background",
    type=click.Choice(["pcnet-c", "opencv"]),
    default="pcnet-c",
    help="Who paints the background where the objects were: PCNet-C (the paper) or cv2.inpaint.",
)
@click.option(
    "--background-scale",
    type=click.FloatRange(min=0.1),
    default=1.0,
    help="Paint the background on the whole image at this many times the PCNet-C input size.",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="PCNet-C crops per forward.")
@shard_option(
    "Only images K, K+N, ... (one folder per image, so shards can share OUT_DIR); under torchrun each "
    "process takes its own shard."
)
@DEVICE_OPTION
@FORMAT_OPTION
def deocclude(
    ann_json: Path,
    out_dir: Path,
    images_dir: Path,
    checkpoint_c: Path,
    checkpoint_m: str | None,
    image_ids: str | None,
    order_th: float | None,
    amodal_th: float | None,
    eraser_dilate: int | str,
    fmt: str | None,
    shard: str | None,
    **options: object,
) -> None:
    """Take each image of ANN_JSON apart into intact objects and a background, in OUT_DIR.

    Per image, OUT_DIR/<image id>/ gets object-<annotation id>.png (RGBA, alpha = amodal mask,
    hidden parts painted by PCNet-C), background.png (every object removed) and layers.json
    (boxes, order graph, paint order). Finished images are skipped on a rerun. Example:

    \b
        amodalize deocclude val.json layers/ --images-dir val2014/ --checkpoint-m m.pt --checkpoint-c c.pt

    \b
        torchrun --nproc_per_node 4 -m amodalize deocclude val.json layers/ --images-dir val2014/ ...
    """
    from amodalize.infer.settings import ConvertRequest
    from amodalize.scene.deocclude import deocclude_file

    with progress_bar() as bar:
        task = bar.add_task("de-occluding images", total=None, visible=False)
        summary = deocclude_file(
            ann_json,
            images_dir,
            out_dir,
            checkpoint_c,
            masks=ConvertRequest(
                "pcnet",
                "pcnet",
                checkpoint_m,
                settings={"order_th": order_th, "amodal_th": amodal_th, "eraser_dilate": eraser_dilate},
            ),
            fmt=fmt,
            image_ids=parse_ids(image_ids, "--images"),
            shard=shard_of(shard),
            on_start=lambda n, done: bar.update(task, total=n, completed=done, visible=True),
            on_progress=lambda n: bar.advance(task, n),
            **options,
        )
    console.print(
        f"wrote {out_dir}: {summary['images']} images ({summary['skipped']} already done), "
        f"{summary['objects']} object layers, {summary['painted']} with painted hidden parts, "
        f"{summary['cyclic']} images with an order cycle, {summary['seconds']:.1f} s",
        soft_wrap=True,
    )


@click.command()
@click.argument("layers_dir", type=EXISTING_DIR)
@click.option("--image", "image_id", type=int, default=None, help="Image id, when LAYERS_DIR holds several.")
@click.option("--delete", multiple=True, type=int, metavar="ID", help="Remove an object (repeatable).")
@click.option("--shift", multiple=True, metavar="ID:DX,DY", help="Move an object by DX, DY pixels (repeatable).")
@click.option("--swap", multiple=True, metavar="ID1,ID2", help="Swap two objects' depth positions (repeatable).")
@click.option("--to-front", multiple=True, type=int, metavar="ID", help="Bring an object to the front (repeatable).")
@click.option("-o", "--output", type=OUT_FILE, required=True, help="The new image (PNG/JPG).")
@click.option(
    "--compare",
    type=OUT_FILE,
    default=None,
    help="Also write original | modal-only baseline | amodalize side by side.",
)
def recompose(
    layers_dir: Path,
    image_id: int | None,
    delete: tuple[int, ...],
    shift: tuple[str, ...],
    swap: tuple[str, ...],
    to_front: tuple[int, ...],
    output: Path,
    compare: Path | None,
) -> None:
    """Repaint a de-occluded image from its layers after edits.

    Deleting an object reveals the completed objects and background behind it; shifting moves a
    completed object. Edits apply in the order: delete, swap, to-front, shift. Example:

    \b
        amodalize recompose layers/1 --delete 4 --shift 7:20,0 -o edited.png --compare side.png
    """
    from amodalize.data.images import write_image_atomic
    from amodalize.scene import recompose as rc

    shifts = {}
    for item in shift:
        key, _, offset = item.partition(":")
        if not key.strip().lstrip("-").isdigit():
            raise click.BadParameter(f"expected ID:DX,DY such as 3:10,-5, got {item!r}", param_hint="--shift")
        shifts[int(key)] = parse_pair(offset, "--shift", "3:10,-5")
    edits = rc.Edits(list(delete), [parse_pair(s, "--swap", "3,7") for s in swap], list(to_front), shifts)
    scene = rc.load_scene(rc.find_scene(layers_dir, image_id))
    new = rc.recompose(scene, edits)
    write_image_atomic(output, new[..., ::-1])
    message = f"wrote {output}"
    if compare is not None or not edits.ids():
        original = rc.original_image(scene)
        if not edits.ids():
            error = rc.mean_abs_error(new, original)
            message += f"; mean absolute difference from the original image: {error:.2f} (0-255)"
        if compare is not None:
            baseline = rc.modal_baseline(original, scene.doc, edits)
            picture = rc.side_by_side([original, baseline, new], ["original", "modal only + inpaint", "amodalize"])
            write_image_atomic(compare, picture[..., ::-1])
            message += f"; comparison in {compare}"
    console.print(message, soft_wrap=True)
