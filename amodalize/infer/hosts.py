"""PCNet-M conversion with its host work spread over worker processes.

The process that owns the model (and the GPU, where there is one) runs only forward passes. Each
worker process converts whole chunks of images (decoding, pair tests, patches, increments,
paste-back, encoding), as the serial path does, but sends every batch of queries to the model
process and waits for its P(fg). A batch is forwarded exactly as the worker built it, so every
output is identical to the serial path's. Queues are bounded (at most two chunks per worker in
flight, one batch per worker waiting), so memory stays flat however large the split.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import traceback
from collections.abc import Callable, Iterator

import numpy as np

from amodalize.infer.batcher import Completer

# Chunks handed to each worker ahead of the one it works on.
CHUNKS_AHEAD = 2
# Seconds between checks that the workers are still alive while waiting for them.
POLL_S = 5.0


class RemoteCompleter:
    """The Completer interface inside a worker: batches go to the model process, P(fg) comes back."""

    def __init__(self, worker: int, input_size: int, batch_size: int, inbox: mp.Queue, replies: mp.Queue):
        self.worker, self.input_size, self.batch_size = worker, input_size, batch_size
        self.inbox, self.replies = inbox, replies

    def run(self, n: int, build: Callable[[slice], tuple[np.ndarray, np.ndarray, np.ndarray]]) -> np.ndarray:
        """P(foreground) ``[n, S, S]`` float32, as ``Completer.run``: the next batch is built while
        the model process runs this one."""
        out = np.empty((n, self.input_size, self.input_size), dtype=np.float32)
        parts = [slice(k, min(k + self.batch_size, n)) for k in range(0, n, self.batch_size)]
        for k, part in enumerate(parts):
            modal, eraser, category = build(part)
            self.inbox.put(("forward", self.worker, modal.copy(), eraser.copy(), category.copy()))
            if k:
                out[parts[k - 1]] = self.replies.get()
        if parts:
            out[parts[-1]] = self.replies.get()
        return out


def _worker(worker: int, opts: object, tasks: mp.Queue, inbox: mp.Queue, replies: mp.Queue, sizes: tuple) -> None:
    from amodalize.convert import convert_chunk  # the worker's own import, under spawn

    remote = RemoteCompleter(worker, sizes[0], sizes[1], inbox, replies)
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


def convert_chunks(
    chunks: list[list], opts: object, completer: Completer, workers: int
) -> Iterator[list]:
    """The results of ``convert_chunk`` for each chunk, in order, with the host work done by
    ``workers`` processes and the forwards by ``completer`` in this process."""
    ctx = mp.get_context("spawn")  # the model process may hold CUDA or OpenMP threads: never fork it
    inbox: mp.Queue = ctx.Queue()
    tasks = [ctx.Queue() for _ in range(workers)]
    replies = [ctx.Queue() for _ in range(workers)]
    sizes = (completer.input_size, completer.batch_size)
    procs = [
        ctx.Process(target=_worker, args=(k, opts, tasks[k], inbox, replies[k], sizes), daemon=True)
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
                _, worker, modal, eraser, category = message
                replies[worker].put(completer(modal, eraser, category))
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
