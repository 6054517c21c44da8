"""Where chunks of images are converted: in this process, over joblib workers (model-free
methods), or, for PCNet-M, with the host work spread over worker processes (``convert_dataset``).

For PCNet-M with workers, the process that owns the model (and the GPU, where there is one) runs
only forward passes. Each worker process converts whole chunks of images (decoding, pair tests, patches, increments,
paste-back, encoding), as the serial path does, but hands every batch of queries to the model
process through shared memory and waits for its P(fg). A batch is forwarded exactly as the worker
built it, so every output is identical to the serial path's. What is in flight is bounded (two
chunks per worker queued, two batch slots per worker), so memory stays flat however large the split.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import traceback
from collections.abc import Callable, Iterator
from multiprocessing import shared_memory

import numpy as np
from joblib import Parallel, delayed

from amodalize.data.records import Dataset, ImageRecord, ImageResult
from amodalize.infer.batcher import Completer
from amodalize.infer.convert import ConvertOptions, convert_chunk

# Chunks handed to each worker ahead of the one it works on.
CHUNKS_AHEAD = 2
# Fewest queries per message to the model process: each message costs a queue round trip (~0.1 ms),
# which at one query per forward (a CPU at 256 px) outweighed the host work it moved (measured
# 0.6x of serial with 2 workers). A message holds whole forward batches, so the model process
# splits it where the serial path would and the outputs stay identical.
MESSAGE_QUERIES = 64
# Seconds between checks that the workers are still alive while waiting for them.
POLL_S = 5.0
# Workers are forked from a fork server that imported the conversion code once (seconds, once;
# spawn re-imports it in every worker), never from the model process: a fork of a process whose
# OpenMP, OpenCV or CUDA threads are running can hang in the child. Spawn where there is none.
START_METHOD = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"


def message_queries(batch_size: int) -> int:
    """Queries per message: the fewest whole forward batches that hold ``MESSAGE_QUERIES``."""
    return batch_size * -(-MESSAGE_QUERIES // batch_size)


class Slots:
    """Shared-memory buffers through which one worker and the model process exchange messages: two
    slots (one being filled while the other is forwarded), each with the modal and eraser patches
    (uint8 ``[Q, S, S]``), the categories (float32 ``[Q]``) and P(fg) (float32 ``[Q, S, S]``)."""

    SLOTS = 2

    def __init__(self, queries: int, size: int, name: str | None = None) -> None:
        self.queries = queries
        self.shapes = {"modal": ((queries, size, size), np.uint8), "eraser": ((queries, size, size), np.uint8)}
        self.shapes.update(category=((queries,), np.float32), prob=((queries, size, size), np.float32))
        per_slot = sum(int(np.prod(shape)) * np.dtype(dtype).itemsize for shape, dtype in self.shapes.values())
        self.memory = shared_memory.SharedMemory(name=name, create=name is None, size=self.SLOTS * per_slot)
        self.views: list[dict[str, np.ndarray]] = []
        offset = 0
        for _ in range(self.SLOTS):
            slot = {}
            for key, (shape, dtype) in self.shapes.items():
                slot[key] = np.ndarray(shape, dtype, buffer=self.memory.buf, offset=offset)
                offset += int(np.prod(shape)) * np.dtype(dtype).itemsize
            self.views.append(slot)

    def close(self, unlink: bool = False) -> None:
        self.views = []  # the arrays must go before the memory they point into
        self.memory.close()
        if unlink:
            self.memory.unlink()


class RemoteCompleter:
    """The Completer interface inside a worker: batches go to the model process through shared
    memory, P(fg) comes back the same way."""

    def __init__(self, worker: int, input_size: int, slots: Slots, inbox: mp.Queue, replies):
        self.worker, self.input_size = worker, input_size
        self.slots, self.inbox, self.replies = slots, inbox, replies

    def run(self, n: int, build: Callable[[slice], tuple[np.ndarray, np.ndarray, np.ndarray]]) -> np.ndarray:
        """P(foreground) ``[n, S, S]`` float32, as ``Completer.run``: the next message is built while
        the model process runs this one."""
        out = np.empty((n, self.input_size, self.input_size), dtype=np.float32)
        step = self.slots.queries
        parts = [slice(k, min(k + step, n)) for k in range(0, n, step)]

        def collect(k: int) -> None:
            slot = self.replies.get()
            out[parts[k]] = self.slots.views[slot]["prob"][: parts[k].stop - parts[k].start]

        for k, part in enumerate(parts):
            slot, count = k % Slots.SLOTS, part.stop - part.start
            for key, value in zip(("modal", "eraser", "category"), build(part)):
                self.slots.views[slot][key][:count] = value
            self.inbox.put(("forward", self.worker, slot, count))
            if k:
                collect(k - 1)
        if parts:
            collect(len(parts) - 1)
        return out


def _worker(
    worker: int, opts: ConvertOptions, tasks: mp.Queue, inbox: mp.Queue, replies: mp.Queue, sizes: tuple
) -> None:
    import cv2

    cv2.setNumThreads(1)  # the workers are the parallelism; OpenCV's own threads would only contend

    slots = Slots(sizes[1], sizes[0], name=sizes[2])
    remote = RemoteCompleter(worker, sizes[0], slots, inbox, replies)
    try:
        while True:
            task = tasks.get()
            if task is None:
                return
            index, items = task
            try:
                inbox.put(("done", index, convert_chunk(items, opts, remote)))
            except BaseException:  # reported to the model process, which raises it
                inbox.put(("error", index, traceback.format_exc()))
                return
    finally:
        del remote
        slots.close()


def convert_chunks(chunks: list[list], opts: ConvertOptions, completer: Completer, workers: int) -> Iterator[list]:
    """The results of ``convert_chunk`` for each chunk, in order, with the host work done by
    ``workers`` processes and the forwards by ``completer`` in this process."""
    ctx = mp.get_context(START_METHOD)
    if START_METHOD == "forkserver":
        ctx.set_forkserver_preload(["amodalize.infer.hosts"])
    inbox: mp.Queue = ctx.Queue()
    tasks = [ctx.Queue() for _ in range(workers)]
    replies = [ctx.Queue() for _ in range(workers)]
    queries = message_queries(completer.batch_size)
    slots = [Slots(queries, completer.input_size) for _ in range(workers)]
    procs = [
        ctx.Process(
            target=_worker,
            args=(
                k,
                opts,
                tasks[k],
                inbox,
                replies[k],
                (completer.input_size, queries, slots[k].memory.name),
            ),
            daemon=True,
        )
        for k in range(workers)
    ]
    for p in procs:
        p.start()
    owner: dict[int, int] = {}
    sent = 0

    def feed(worker: int) -> None:
        nonlocal sent
        if sent < len(chunks):
            owner[sent] = worker
            tasks[worker].put((sent, chunks[sent]))
            sent += 1

    try:
        for k in range(workers):
            for _ in range(CHUNKS_AHEAD):
                feed(k)
        finished: dict[int, list] = {}
        next_out = 0
        while next_out < len(chunks):
            try:
                message = inbox.get(timeout=POLL_S)
            except queue.Empty:
                if not all(p.is_alive() for p in procs):
                    raise RuntimeError("a conversion worker process died") from None
                continue
            kind = message[0]
            if kind == "forward":
                _, worker, slot, count = message
                view = slots[worker].views[slot]
                completer(view["modal"][:count], view["eraser"][:count], view["category"][:count], view["prob"][:count])
                replies[worker].put(slot)
            elif kind == "done":
                _, index, results = message
                finished[index] = results
                feed(owner.pop(index))
                while next_out in finished:
                    yield finished.pop(next_out)
                    next_out += 1
            else:
                raise RuntimeError(f"a conversion worker failed:\n{message[2]}")
    finally:
        for q in tasks:
            q.put(None)
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
        for block in slots:
            block.close(unlink=True)


def model_workers(completer: Completer) -> int:
    """Host worker processes beside the model by default: the cores less one on CUDA; none on CPU,
    where the convolutions already use every core (docs/measurements.md, "Speed")."""
    if completer.device.type == "cuda":
        return max(1, (os.cpu_count() or 1) - 1)
    return 1


def convert_dataset(
    dataset: Dataset,
    opts: ConvertOptions,
    images: list[ImageRecord] | None = None,
    workers: int = 1,
    chunk_size: int = 16,
    completer: Completer | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> dict[int, ImageResult]:
    """Convert ``images`` (default: every image of the dataset); results keyed by image id.

    Model-free methods spread chunks over ``workers`` processes (-1: all cores). PCNet-M runs in
    this process, batching each chunk's queries through ``completer``; with ``workers`` > 1 (-1:
    ``model_workers``) the host work of the chunks is done by that many worker processes
    (``convert_chunks``), with the same results.
    """
    if opts.needs_model and completer is None:
        raise ValueError("PCNet-M methods need a completer (a loaded checkpoint)")
    items = [(image, dataset.by_image[image.id]) for image in (dataset.images if images is None else images)]
    chunks = [items[k : k + chunk_size] for k in range(0, len(items), chunk_size)]
    if opts.needs_model:
        workers = model_workers(completer) if workers == -1 else workers
    if opts.needs_model and workers > 1 and len(chunks) > 1:
        runs: Iterator[list[ImageResult]] = convert_chunks(chunks, opts, completer, workers)
    elif opts.needs_model or workers == 1 or len(chunks) == 1:
        runs = (convert_chunk(c, opts, completer) for c in chunks)
    else:
        runs = Parallel(n_jobs=workers, return_as="generator")(delayed(convert_chunk)(c, opts) for c in chunks)
    results: dict[int, ImageResult] = {}
    for chunk_results in runs:
        for r in chunk_results:
            results[r.image_id] = r
        if on_progress:
            on_progress(len(chunk_results))
    return results
