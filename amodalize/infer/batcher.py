"""Batched network forwards: PCNet-M (target, eraser) mask queries and PCNet-C content crops, many
per call, scattered back in order."""

from __future__ import annotations

import ctypes
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from amodalize.errors import DeviceError
from amodalize.models.pcnet_c import denormalize, pack_content_input
from amodalize.models.pcnet_m import category_factor, foreground_probability, pack_input

# Pixels per CPU forward: larger batches fall out of cache (measured on 2 cores: at 64 px, batch 16
# runs 673 samples/s against 560 at 64; at 256 px batch 1 is fastest).
CPU_BATCH_PIXELS = 16 * 64 * 64
# glibc malloc options (malloc.h): serve blocks below this from the heap, return freed heap to the
# OS only above that.
M_MMAP_THRESHOLD, M_TRIM_THRESHOLD = -3, -1
KEEP_FREED_BYTES = 64 << 20

TTA_MODES = ("none", "flip")


def keep_freed_memory() -> None:
    """Let glibc keep up to KEEP_FREED_BYTES of freed memory for reuse (a no-op elsewhere).

    By default every CPU forward's activations (a few MB each) are mapped fresh and given back when
    freed, and the page faults of mapping them again cost a fifth of each forward until malloc's
    own thresholds have grown: the first 2 s of a conversion ran 1.25x slower than the rest."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: its allocator has its own policy
        return
    libc.mallopt(M_MMAP_THRESHOLD, KEEP_FREED_BYTES)
    libc.mallopt(M_TRIM_THRESHOLD, 2 * KEEP_FREED_BYTES)


def resolve_device(device: str, index: int = 0) -> torch.device:
    """'auto' (CUDA when available), 'cpu' or 'cuda' as a torch device; CUDA asked for but absent is an error."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError("--device cuda was asked for, but no CUDA GPU is available")
        return torch.device("cuda", index)
    return torch.device("cpu")


def default_batch_size(device: torch.device, input_size: int) -> int:
    """Queries per forward: a cache-sized batch on CPU, 256 on CUDA."""
    if device.type == "cuda":
        return 256
    return max(1, CPU_BATCH_PIXELS // (input_size * input_size))


class Completer:
    """Runs PCNet-M on stacks of queries, ``batch_size`` per forward pass.

    Args:
        model (nn.Module): PCNet-M in eval mode.
        input_size (int): patch side S the model was trained at.
        device (torch.device): where the forwards run.
        batch_size (int): queries per forward; 1 is the reference's one-pair-per-forward loop.
        amp (bool): bfloat16 autocast on CUDA.
        prefetch (bool): build the next batch's patches in a helper thread while the network runs
            (it releases the GIL), so that mask work hides behind the forwards. Default: on CUDA
            only; on a 2-core CPU the helper competes with the convolutions for the cores
            (measured: no gain at 256 px, up to 1.45x slower at 64 px).
        tta (str): test-time augmentation: 'none', or 'flip' (each query also runs mirrored, as an
            extra row of the same forward, and the two P(fg) maps are averaged).
        categories (str): how the model takes the queries' category ids (the checkpoint's
            ``model.categories``): 'none' ignores them, 'multiply' scales the mask channel by them.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        input_size: int,
        *,
        device: torch.device,
        batch_size: int = 64,
        amp: bool = False,
        prefetch: bool | None = None,
        tta: str = "none",
        categories: str = "none",
    ) -> None:
        if tta not in TTA_MODES:
            raise ValueError(f"unknown test-time augmentation {tta!r}; choose from {', '.join(TTA_MODES)}")
        # channels-last measured ~2x faster for this UNet on CPU (oneDNN) and is the fast layout on CUDA
        self.model = model.to(device).eval().to(memory_format=torch.channels_last)
        self.input_size = input_size
        self.device = device
        self.batch_size = batch_size
        self.amp = amp and device.type == "cuda"
        self.prefetch = device.type == "cuda" if prefetch is None else prefetch
        self.tta = tta
        self.categories = categories
        self.forwards = 0
        self.queries = 0
        self.forward_s = 0.0  # wall seconds inside forward passes, copies included

    def __call__(
        self, modal: np.ndarray, eraser: np.ndarray, category: np.ndarray, out: np.ndarray | None = None
    ) -> np.ndarray:
        """P(foreground) ``[N, S, S]`` float32 for modal/eraser ``[N, S, S]`` 0/1 and category ``[N]``,
        written into ``out`` where given."""
        return self.run(len(modal), lambda part: (modal[part], eraser[part], category[part]), out)

    def run(
        self,
        n: int,
        build: Callable[[slice], tuple[np.ndarray, np.ndarray, np.ndarray]],
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """P(foreground) ``[n, S, S]`` float32 for ``n`` queries whose inputs ``build(part)`` makes,
        one batch ``part`` (a slice of 0..n) at a time: modal, eraser ``[B, S, S]`` and category ``[B]``.
        Written into ``out`` (float32 ``[n, S, S]``) where given: the host worker's shared memory, so
        that the process owning the model copies each result once."""
        if out is None:
            out = np.empty((n, self.input_size, self.input_size), dtype=np.float32)
        parts = [slice(k, min(k + self.batch_size, n)) for k in range(0, n, self.batch_size)]
        with ThreadPoolExecutor(max_workers=1) as helper:
            built = helper.map(build, parts) if self.prefetch else map(build, parts)
            for part, (modal, eraser, category) in zip(parts, built):
                self._forward(modal, eraser, category, out[part])
        self.queries += n
        return out

    def _forward(self, modal: np.ndarray, eraser: np.ndarray, category: np.ndarray, out: np.ndarray) -> None:
        """Writes P(foreground) of one batch into ``out`` (float32 ``[B, S, S]``)."""
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
            start = time.perf_counter()
            tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in (modal, eraser, category)]
            if self.device.type == "cuda":  # uint8 masks, page-locked: a quarter of the bytes, copied asynchronously
                tensors = [t.pin_memory().to(self.device, non_blocking=True) for t in tensors]
            x = pack_input(tensors[0], tensors[1], category_factor(self.categories, tensors[2]))
            if self.tta == "flip":
                x = torch.cat([x, x.flip(-1)])
            x = x.contiguous(memory_format=torch.channels_last)
            self.forwards += 1
            prob = foreground_probability(self.model, x)
            if self.tta == "flip":
                half = len(modal)
                prob = (prob[:half] + prob[half:].flip(-1)) / 2
            torch.from_numpy(out).copy_(prob)
            self.forward_s += time.perf_counter() - start


class Painter:
    """Runs the PCNet-C generator on stacks of crops, ``batch_size`` per forward pass.

    Args:
        generator (nn.Module): the PConvUNet in eval mode.
        device (torch.device): where the forwards run.
        batch_size (int): crops per forward.
        amp (bool): bfloat16 autocast on CUDA.
        categories (str): how the generator takes the crops' category ids (``model.categories``).
    """

    def __init__(
        self,
        generator: torch.nn.Module,
        *,
        device: torch.device,
        batch_size: int = 16,
        amp: bool = False,
        categories: str = "none",
    ):
        self.generator = generator.to(device).eval()
        self.categories = categories
        self.device = device
        self.batch_size = batch_size
        self.amp = amp and device.type == "cuda"
        self.forwards = 0

    def __call__(self, rgb: np.ndarray, hole: np.ndarray, visible: np.ndarray, category: np.ndarray) -> np.ndarray:
        """Composites RGB uint8 ``[N, S, S, 3]``: ``rgb`` (uint8 ``[N, S, S, 3]``) outside the 0/1
        ``hole [N, S, S]``, painted inside, conditioned on the object's ``visible`` mask and ``category [N]``."""
        out = np.empty_like(rgb)
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
            for k in range(0, len(rgb), self.batch_size):
                part = slice(k, k + self.batch_size)
                x, valid, image = pack_content_input(
                    torch.from_numpy(rgb[part]).permute(0, 3, 1, 2),
                    torch.from_numpy(hole[part]),
                    torch.from_numpy(visible[part]),
                    category_factor(self.categories, torch.from_numpy(category[part])),
                )
                x, valid, image = x.to(self.device), valid.to(self.device), image.to(self.device)
                comp = valid * image + (1 - valid) * self.generator(x, valid).float()
                out[part] = (denormalize(comp) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
                self.forwards += 1
        return out
