"""PCNet-M conversion: the pipeline logic with a model whose answer is known, batching, weights."""

import json

import cv2
import numpy as np
import pytest
import torch

from amodalize.data.formats import read_dataset
from amodalize.data.masks import Crop, decode_crop, encode_crop
from amodalize.data.records import Dataset, ImageRecord, Instance
from amodalize.data.synth import SynthOptions, make_dataset
from amodalize.infer.amodal import paste
from amodalize.infer.batcher import Completer
from amodalize.infer.convert import ConvertOptions, amodal_pcnet, completion, grown_box, prepare
from amodalize.infer.hosts import MESSAGE_QUERIES, convert_dataset, message_queries
from amodalize.infer.order import patches
from amodalize.models.pcnet_m import load_pcnet_m
from amodalize.models.unet import UNet
from tests.conftest import invoke, regions
from tests.models.test_unet import to_reference


class HullNet(torch.nn.Module):
    """A stand-in for PCNet-M whose answer is known: it completes the modal input to its convex
    hull, i.e. a target grows exactly into the hidden part of a convex object."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], 2, *x.shape[2:])
        for k, modal in enumerate((x[:, 0] > 0).numpy().astype(np.uint8)):
            hull = np.zeros_like(modal)
            contours, _ = cv2.findContours(modal, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            if contours:
                cv2.fillConvexPoly(hull, cv2.convexHull(np.concatenate(contours)), 1)
            out[k, 1] = torch.from_numpy(hull * 20.0 - 10.0)
        return out


def square_and_bar(size=64):
    """A square (id 1) behind a vertical bar (id 2) that hides its middle columns."""
    square = np.zeros((size, size), bool)
    square[16:48, 16:48] = True
    bar = np.zeros((size, size), bool)
    bar[8:56, 28:36] = True
    image = ImageRecord(1, size, size, None, {"id": 1, "width": size, "height": size})
    insts = []
    for k, mask in enumerate((square & ~bar, bar), start=1):
        rle = encode_crop(Crop(mask), size, size)
        insts.append(
            Instance(k, 1, 1, rle, list(map(float, cv2.boundingRect(mask.astype(np.uint8)))), source={"id": k})
        )
    return Dataset(None, "coco", [image], insts, []), square


def test_dual_completion_orders_and_completes_with_a_known_model():
    dataset, square = square_and_bar()
    for grow, queries in ((0.5, 4), (0.0, 3)):
        completer = Completer(HullNet(), 64, device=torch.device("cpu"), batch_size=4)
        opts = ConvertOptions("pcnet", "pcnet", grow_to_occluders=grow)
        result = convert_dataset(dataset, opts, completer=completer)[1]
        assert [(a, b) for a, b, *_ in result.edges] == [(2, 1)]  # the bar occludes the square
        got = decode_crop(result.amodal[1]).within((0, 0, 64, 64))
        assert (got & square).sum() / (got | square).sum() > 0.9  # resize rounding at the edges
        # 2 ordering queries; the square's first completion runs on its crop grown toward the bar
        # (taller than the square), or reuses an ordering query on the visible box's crop, then
        # once more around what it completed; the bar, with nothing in front, keeps its visible
        # mask without a forward
        assert completer.queries == queries


def tiny_model(path):
    torch.manual_seed(0)
    model = UNet(2, 2, widen=0.25)
    for m in model.modules():  # non-trivial running statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
    cfg = {"model": {"widen": 0.25}, "data": {"input_size": 32}}
    torch.save({"model": model.state_dict(), "config": cfg}, path)
    return path


def test_batched_equals_one_pair_per_forward(tmp_path):
    modal, _ = make_dataset(tmp_path, 6, 5, SynthOptions(width=96, height=96))
    ckpt = tiny_model(tmp_path / "m.pt")
    outs = []
    for batch in ("1", "64"):
        out = tmp_path / f"b{batch}.json"
        invoke(
            [
                "convert",
                modal,
                out,
                "--checkpoint",
                ckpt,
                "--batch-size",
                batch,
                "--amodal-th",
                "0.5",
                "--order-th",
                "0.5",
            ]
        )
        outs.append(json.loads(out.read_text()))
    assert outs[0]["annotations"] == outs[1]["annotations"]
    assert outs[0]["occlusion_pairs"] == outs[1]["occlusion_pairs"]
    assert outs[0]["info"]["amodalize"]["checkpoint"]["kind"] == "amodalize"


def test_category_ids_reach_the_network_only_under_multiply(tmp_path):
    """A checkpoint that multiplies the mask by the category id (the reference's use_category, and
    every checkpoint that does not say) answers id 40 otherwise than id 1; one that says 'none' does not."""
    legacy = tiny_model(tmp_path / "legacy.pt")
    ckpt = torch.load(legacy, weights_only=True)
    ckpt["config"]["model"]["categories"] = "none"
    torch.save(ckpt, tmp_path / "none.pt")
    dataset, _ = square_and_bar()
    modal = np.stack([decode_crop(i.modal).within((0, 0, 64, 64)) for i in dataset.instances]).astype(np.uint8)
    eraser = modal[::-1].copy()
    answers = {}
    for path in (legacy, tmp_path / "none.pt"):
        loaded = load_pcnet_m(path)
        completer = Completer(loaded.model, 64, device=torch.device("cpu"), categories=loaded.categories)
        ids = [np.array([1, 1], np.float32), np.array([40, 0], np.float32)]
        answers[loaded.categories] = [completer(modal, eraser, c) for c in ids]
    assert set(answers) == {"multiply", "none"}
    assert np.array_equal(*answers["none"])
    assert np.abs(answers["multiply"][0] - answers["multiply"][1]).max() > 1e-3


def test_reference_checkpoint_converts(tmp_path):
    dataset, _ = square_and_bar()
    torch.manual_seed(0)
    state = {to_reference(k): v for k, v in UNet(2, 2, widen=2).state_dict().items()}
    ckpt = tmp_path / "COCOA_pcnet_m.pth.tar"
    torch.save({"step": 56000, "state_dict": state, "optimizer": {}}, ckpt)
    src = tmp_path / "in.json"
    src.write_text(
        json.dumps(
            {
                "images": [dataset.images[0].source],
                "annotations": [
                    {"id": i.id, "image_id": 1, "category_id": 1, "segmentation": i.modal, "bbox": i.bbox}
                    for i in dataset.instances
                ],
            }
        )
    )
    out = tmp_path / "out.json"
    invoke(["convert", src, out, "--checkpoint", ckpt])
    info = json.loads(out.read_text())["info"]["amodalize"]
    assert info["checkpoint"]["kind"] == "reference" and info["checkpoint"]["input_size"] == 256
    assert info["method"] == "pcnet" and info["order_method"] == "fused"


def test_no_checkpoint_means_the_shipped_model(tmp_path, cocoa_files):
    result = invoke(["convert", cocoa_files / "1.json", tmp_path / "o.json"])
    assert "PCNet-M: the shipped model 'general'" in result.stderr
    info = json.loads((tmp_path / "o.json").read_text())["info"]["amodalize"]
    assert info["method"] == "pcnet" and info["order_method"] == "fused"
    assert info["checkpoint"]["shipped_model"] == "general"
    bad = invoke(["convert", cocoa_files / "1.json", tmp_path / "p.json", "--checkpoint", "nope"], exit_code=2)
    assert "not a shipped model" in bad.stderr and not (tmp_path / "p.json").exists()


def test_gt_modal_converts_on_cocoa_demo(tmp_path, cocoa_files):
    ckpt = tiny_model(tmp_path / "m.pt")
    out = tmp_path / "o.json"
    invoke(["convert", cocoa_files / "3.json", out, "--checkpoint", ckpt])
    assert len(read_dataset(out).instances) == regions(cocoa_files / "3.json")


def test_visible_kept_and_completion_clipped_to_occluders():
    """An L-shaped object with nothing in front: HullNet fills its concavity. The reference rule
    (replace, no clip) keeps that growth; the defaults keep exactly the visible mask."""
    size = 64
    shape = np.zeros((size, size), bool)
    shape[10:50, 10:20] = True
    shape[40:50, 10:50] = True
    far = np.zeros((size, size), bool)
    far[0:4, 60:64] = True
    image = ImageRecord(1, size, size, None, {"id": 1})
    insts = [
        Instance(k, 1, 1, encode_crop(Crop(m), size, size), list(map(float, cv2.boundingRect(m.astype(np.uint8)))))
        for k, m in ((1, shape), (2, far))
    ]
    dataset = Dataset(None, "coco", [image], insts, [])
    completer = Completer(HullNet(), 64, device=torch.device("cpu"))
    ref = convert_dataset(
        dataset, ConvertOptions("pcnet", "pcnet", keep_visible=False, clip_to_occluders=False), completer=completer
    )
    ours = convert_dataset(dataset, ConvertOptions("pcnet", "pcnet"), completer=completer)
    grown = decode_crop(ref[1].amodal[1]).within((0, 0, size, size))
    kept = decode_crop(ours[1].amodal[1]).within((0, 0, size, size))
    assert grown.sum() > 1.3 * shape.sum() and ref[1].calibration[0] > 1.3 * ref[1].calibration[1]
    assert np.array_equal(kept, shape)


class FillNet(torch.nn.Module):
    """A stand-in for PCNet-M that completes a target with everything under its erasers in view."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seen = ((x[:, 0] > 0) | (x[:, 1] > 0)).float()
        return torch.stack([torch.zeros_like(seen), seen * 20.0 - 10.0], dim=1)


def bar_behind_bar(width=240):
    """A long bar (instance 0) seen only at its left end, the rest hidden behind a wider bar (1)."""
    back = np.zeros((64, width), bool)
    back[30:46, 10:200] = True
    front = np.zeros_like(back)
    front[28:48, 30:210] = True
    image = ImageRecord(1, width, 64, None, {"id": 1})
    insts = [
        Instance(k, 1, 1, encode_crop(Crop(m), 64, width), list(map(float, cv2.boundingRect(m.astype(np.uint8)))))
        for k, m in ((1, back & ~front), (2, front))
    ]
    work = prepare(image, insts, ConvertOptions("pcnet", "pcnet"))
    work.order = np.array([[0, -1], [1, 0]])  # the front bar occludes the back one
    return work, back


def test_recentred_completion_follows_the_hidden_part_out_of_the_first_window():
    """The first completion is drawn in a window around the visible end only; each recentred pass
    runs on a window around the previous completion, so more of the hidden bar is recovered."""
    ious, queries = [], []
    for recentre in (0, 1, 2):
        work, back = bar_behind_bar()
        completer = Completer(FillNet(), 32, device=torch.device("cpu"))
        got = amodal_pcnet([work], ConvertOptions("pcnet", "pcnet", recentre=recentre), completer, {})[0][0]
        got = got.within((0, 0, 240, 64))
        ious.append((got & back).sum() / (got | back).sum())
        queries.append(completer.queries)
    assert ious[0] < ious[1] < ious[2]
    assert queries == [1, 2, 3]  # one query for the occluded bar per pass; none for the front one


def test_grown_box_moves_toward_the_occluders_within_the_ordering_window():
    """The back bar's visible box (10, 30, 20, 16) and the front bar inside its window (4, 22, 34, 52)
    span x 10-34, y 28-48; half way there is (10, 29, 22, 18). Nothing in front: the visible box."""
    work, _ = bar_behind_bar()
    assert work.windows[0] == (4, 22, 34, 52)
    assert grown_box(work, 0, (1,), 0.5) == [10, 29, 22, 18]
    assert grown_box(work, 0, (1,), 0.0) == [10, 30, 20, 16]
    assert grown_box(work, 1, (), 0.5) == work.live[1].bbox


def test_a_crop_grown_toward_the_occluders_frames_more_of_the_hidden_part():
    """With no recentring, the one completion of the back bar recovers more of it the further its
    crop is grown toward the bar in front, for the same single query."""
    ious = []
    for share in (0.0, 0.5, 1.0):
        work, back = bar_behind_bar()
        completer = Completer(FillNet(), 32, device=torch.device("cpu"))
        opts = ConvertOptions("pcnet", "pcnet", recentre=0, grow_to_occluders=share)
        got = amodal_pcnet([work], opts, completer, {})[0][0].within((0, 0, 240, 64))
        ious.append((got & back).sum() / (got | back).sum())
        assert completer.queries == 1
    assert ious[0] < ious[1] < ious[2]


class CentreNet(torch.nn.Module):
    """A stand-in for PCNet-M sure of the target and its erasers near the crop's centre (P(fg) 0.9)
    and unsure towards its edges (0.15), as a network is of a hidden part it sees cut off."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seen = (x[:, 0] > 0) | (x[:, 1] > 0)
        size = x.shape[-1]
        centre = (torch.arange(size) - (size - 1) / 2).abs() < 3 * size / 8
        sure = seen & centre[None, None, :] & centre[None, :, None]
        p = torch.where(sure, 0.9, torch.where(seen, 0.15, 0.01))
        return torch.stack([torch.zeros_like(p), torch.log(p / (1 - p))], dim=1)


def test_recentring_on_the_unsure_extent_follows_a_hidden_part_the_sure_one_stops_short_of():
    """Recentred on the box of the sure completion (P(fg) > 0.2), each crop moves only as far along
    the hidden bar as the last one was sure of; on the box of the unsure one (> 0.1) it reaches as
    far as the last crop saw the bar, so the same passes recover more of it."""
    ious = {}
    for recentre_th in (0.0, 0.1):
        work, back = bar_behind_bar()
        completer = Completer(CentreNet(), 32, device=torch.device("cpu"))
        opts = ConvertOptions("pcnet", "pcnet", recentre=6, recentre_th=recentre_th)
        got = amodal_pcnet([work], opts, completer, {})[0][0].within((0, 0, 240, 64))
        ious[recentre_th] = (got & back).sum() / (got | back).sum()
    assert ious[0.1] > ious[0.0] + 0.04


def test_completion_keeps_the_whole_visible_mask_where_the_network_drops_part_of_it():
    """P(fg) that covers only the right half of the visible mask and a bit under the occluder: the
    completion is that growth plus every visible pixel, even those outside the predicted box."""
    work, _ = bar_behind_bar()
    visible = work.crops[0].within((0, 0, 240, 64))
    x0, y0, x1, y1 = work.windows[0]
    prob = np.zeros((x1 - x0, y1 - y0), np.float32)
    prob[30 - y0 : 46 - y0, 20 - x0 : 34 - x0] = 1.0
    got = completion(prob, work, 0, (1,), 0.5, ConvertOptions("pcnet", "pcnet")).within((0, 0, 240, 64))
    grown = np.zeros_like(visible)
    grown[30:46, 30:34] = True
    assert np.array_equal(got, visible | grown)


class Recorder(HullNet):
    """HullNet that keeps every input it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.clone())
        return super().forward(x)


def test_reference_settings_complete_every_instance_from_bilinear_inputs():
    """The reference completes every instance (the empty one and the one with nothing in front too),
    from bilinearly resized patches, so no ordering forward is reused."""
    from amodalize.data.masks import EMPTY, resample_linear
    from amodalize.infer.settings import REFERENCE_SETTINGS

    dataset, _ = square_and_bar()
    hidden = Instance(3, 1, 1, encode_crop(EMPTY, 64, 64), [40.0, 40.0, 10.0, 10.0], source={"id": 3})
    dataset.instances.append(hidden)
    model = Recorder()
    completer = Completer(model, 32, device=torch.device("cpu"), batch_size=1)
    opts = ConvertOptions("pcnet", "pcnet", **REFERENCE_SETTINGS)
    convert_dataset(dataset, opts, completer=completer)
    assert completer.queries == 2 + 3  # the pair both ways, then all three instances
    square_query = model.inputs[2][0, 0].numpy() > 0  # the square (id 1) completed behind the bar
    crop = decode_crop(dataset.instances[0].modal)
    from amodalize.data.masks import square_window

    window = square_window(dataset.instances[0].bbox)
    bar = resample_linear(decode_crop(dataset.instances[1].modal), window, 32)
    assert np.array_equal(square_query, resample_linear(crop, window, 32) & ~bar)


def test_host_work_in_worker_processes_gives_the_serial_results(tmp_path):
    modal, _ = make_dataset(tmp_path, 9, 4, SynthOptions(width=96, height=96))
    dataset = read_dataset(modal)
    opts = ConvertOptions("pcnet", "pcnet", order_th=0.3, amodal_th=0.3)
    serial_completer = Completer(HullNet(), 32, device=torch.device("cpu"), batch_size=3)
    serial = convert_dataset(dataset, opts, workers=1, chunk_size=2, completer=serial_completer)
    parallel_completer = Completer(HullNet(), 32, device=torch.device("cpu"), batch_size=3)
    parallel = convert_dataset(dataset, opts, workers=2, chunk_size=2, completer=parallel_completer)
    assert list(parallel) == list(serial) and sum(len(r.edges) for r in serial.values()) > 0
    assert all(parallel[k].amodal == serial[k].amodal and parallel[k].edges == serial[k].edges for k in serial)
    assert parallel_completer.queries == serial_completer.queries  # every forward ran in this process
    assert parallel_completer.forwards == serial_completer.forwards  # messages split where serial batches do
    assert message_queries(3) % 3 == 0 and message_queries(3) >= MESSAGE_QUERIES > 3


def test_pasting_the_probability_keeps_large_outlines_smooth():
    """P(fg) of a disc at 16 px pasted onto a 160-px window: resizing the probability, then
    thresholding, follows the disc closer than thresholding at 16 px, then resizing (the reference)."""
    yy, xx = np.mgrid[0:160, 0:160]
    disc = (xx - 80) ** 2 + (yy - 80) ** 2 <= 50**2
    prob = cv2.resize(disc.astype(np.float32), (16, 16), interpolation=cv2.INTER_AREA)
    ious = {}
    for resize in ("binary", "probability"):
        got = paste(prob, (0, 0, 160, 160), 0.5, 160, 160, resize).within((0, 0, 160, 160))
        ious[resize] = (got & disc).sum() / (got | disc).sum()
    assert ious["probability"] > ious["binary"] > 0.9
    with pytest.raises(ValueError, match="paste resize"):
        paste(prob, (0, 0, 160, 160), 0.5, 160, 160, "nearest")


def pole_behind_box():
    """A 4-px-thick pole 216 px long (instance 0) whose middle is hidden behind a box (1)."""
    pole = np.zeros((64, 256), bool)
    pole[30:34, 20:236] = True
    box = np.zeros_like(pole)
    box[16:48, 108:148] = True
    image = ImageRecord(1, 256, 64, None, {"id": 1})
    insts = [
        Instance(k, 1, 1, encode_crop(Crop(m), 64, 256), list(map(float, cv2.boundingRect(m.astype(np.uint8)))))
        for k, m in ((1, pole & ~box), (2, box))
    ]
    return insts, image, pole


def test_an_elongated_object_is_completed_on_a_window_narrowed_across_it():
    """In a square 16-px view of the pole's 237-px window a patch pixel is 15 image pixels tall, so
    the part joined behind the box comes back as a band five times the pole's thickness; on the
    window narrowed to 2.5:1 the pole is 7 patch pixels thick and comes back nearly as it is."""
    ious, windows = {}, {}
    for max_aspect in (0.0, 2.5):
        insts, image, pole = pole_behind_box()
        # the window from the visible box alone (not grown toward the box in front)
        opts = ConvertOptions("pcnet", "pcnet", max_aspect=max_aspect, recentre=0, grow_to_occluders=0)
        work = prepare(image, insts, opts)
        work.order = np.array([[0, -1], [1, 0]])  # the box occludes the pole
        completer = Completer(HullNet(), 16, device=torch.device("cpu"))
        got = amodal_pcnet([work], opts, completer, {})[0][0].within((0, 0, 256, 64))
        ious[max_aspect] = (got & pole).sum() / (got | pole).sum()
        windows[max_aspect] = work.windows[0]
    assert ious[2.5] > 0.95 and ious[0.0] < 0.65
    (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = windows[0.0], windows[2.5]
    assert ax1 - ax0 == ay1 - ay0 == bx1 - bx0 and by1 - by0 == int((bx1 - bx0) * 2.5 * 4 / 216)


def test_patches_and_paste_of_a_rectangular_window_keep_image_scale():
    """A window 4x wider than tall: each axis is resampled on its own, the eraser grown by its own
    share of each axis, and P(fg) is pasted back at the window's own width and height."""
    crops = [Crop(np.ones((10, 40), bool), 20, 5), Crop(np.ones((20, 40), bool), 60, 0)]
    window = (0, 0, 160, 40)
    modal, eraser = patches(crops, [window], 0, [1], 16)
    assert modal.sum() == 4 * 4 and eraser.sum() == 4 * 8  # 40x10 and 40x20 image pixels
    grown = patches(crops, [window], 0, [1], 16, dilate=10)[1]  # 10 image px: 1 patch column, 4 rows
    assert np.array_equal(np.argwhere(grown).min(0), [0, 5]) and np.array_equal(np.argwhere(grown).max(0), [11, 10])
    prob = eraser.astype(np.float32)
    pasted = paste(prob, window, 0.5, 40, 160).within((0, 0, 160, 40))
    assert pasted[0:20, 60:100].sum() == pasted.sum() == 40 * 20 - 4  # bilinear rounds the corners off
