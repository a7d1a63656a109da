"""Read a file once and hand every chunk to several consumers running in parallel.

Hashing a file four ways costs two full SHA-256 passes (the whole file, and the tensor data after
the safetensors header for AutoV3), and storing it costs a write. Each consumer ("sink") runs in
its own thread — hashlib and file writes release the GIL — so on two cores the wall time is about
that of the slowest consumer, not their sum. Chunks live in a small pool of reusable buffers; a
buffer goes back to the pool when every sink is done with it.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable

Sink = Callable[[memoryview, int], None]  # (chunk, offset of its first byte in the file)
CHUNK = 4 << 20
_STOP = object()


def read_fanout(fh, sinks: list[Sink], *, observe: Sink | None = None, total: int | None = None,
                progress: Callable[[int, int, str], None] | None = None, chunk: int = CHUNK,
                buffers: int = 6) -> int:
    """Read ``fh`` (a raw binary file) to the end; returns the number of bytes read.

    ``observe`` runs in the reading thread on each chunk before the sinks see it (e.g. to learn
    the safetensors header length from the first 8 bytes). Each sink sees every chunk, in order.
    The first exception raised by a sink is re-raised here after every thread has stopped.
    """
    pool: queue.Queue = queue.Queue()
    for _ in range(buffers):
        pool.put(bytearray(chunk))
    pending: dict[int, int] = {}
    lock = threading.Lock()
    failures: list[BaseException] = []

    def release(buf: bytearray) -> None:
        with lock:
            pending[id(buf)] -= 1
            done = pending[id(buf)] == 0
        if done:
            pool.put(buf)

    def run(sink: Sink, inbox: queue.Queue) -> None:
        while True:
            item = inbox.get()
            if item is _STOP:
                return
            buf, n, offset = item
            try:
                if not failures:
                    sink(memoryview(buf)[:n], offset)
            except BaseException as exc:  # surfaced in the reader
                failures.append(exc)
            finally:
                release(buf)

    inboxes = [queue.Queue(maxsize=buffers) for _ in sinks]
    threads = [threading.Thread(target=run, args=(sink, box), daemon=True) for sink, box in zip(sinks, inboxes)]
    for t in threads:
        t.start()
    offset = 0
    try:
        while not failures:
            buf = pool.get()
            n = fh.readinto(buf)
            if not n:
                pool.put(buf)
                break
            if observe is not None:
                observe(memoryview(buf)[:n], offset)
            with lock:
                pending[id(buf)] = len(sinks)
            for box in inboxes:
                box.put((buf, n, offset))
            offset += n
            if progress:
                progress(offset, total or 0, "")
    finally:
        for box in inboxes:
            box.put(_STOP)
        for t in threads:
            t.join()
    if failures:
        raise failures[0]
    return offset
