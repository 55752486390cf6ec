"""E3's searches in processes of their own, forked once the explorer is loaded.

One interaction is mostly Python (a few dozen steps on one query's tiny tensors), so threads of one
process take turns on its GIL: with 8 pages asking at once the server used 0.9 of 2 CPUs however
many threads searched (bench/RESULTS.md). Each process forked here holds the whole explorer
(copy-on-write: nothing is read twice) and answers one interaction at a time; the parent keeps the
web, the uploads (decoded in its one decoder thread: the memory bound) and hands each search, with
its uploaded picture's vector, to a free process. Requests and answers cross a pipe as JSON bytes
(no pickle); an answer is the same bytes a search in the parent would give.
"""

from __future__ import annotations

import logging
import multiprocessing
import queue
import signal
import socket
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from multiprocessing.connection import Connection

import torch

from src.errors import SuiteError

log = logging.getLogger(__name__)

ANSWER, REFUSED, FAILED = b"A", b"S", b"F"  # the first byte of a reply: what follows it
Work = Callable[[bytes], bytes]  # a request → its answer, in a search process


def forkable(device: torch.device) -> bool:
    """Whether searches may run in forked processes: on the CPU (CUDA cannot be forked) with one
    intra-op thread (a forked OpenMP pool of several threads hangs at its first parallel region)."""
    return device.type == "cpu" and torch.get_num_threads() == 1


class SearchFailed(Exception):
    """A search process failed on a request (its traceback is in the log) or ended."""


class Searchers:
    """`n` processes forked from this one, each doing `work` on one request at a time."""

    def __init__(self, work: Work, n: int, close: Sequence[socket.socket] = ()):
        fork = multiprocessing.get_context("fork")  # the explorer as it is: nothing pickled
        pipes = [fork.Pipe() for _ in range(n)]
        # each process keeps its own end of its own pipe only: a pipe's end is closed for good
        # (EOF on the other side) when the one process holding it closes it or ends
        ends = [end for pipe in pipes for end in pipe]
        self.processes = [
            fork.Process(
                target=_serve,
                args=(work, theirs, [e for e in ends if e is not theirs] + list(close)),
                name="E3-search",
                daemon=True,
            )
            for _, theirs in pipes
        ]
        self.free: queue.SimpleQueue[Connection] = queue.SimpleQueue()
        for p, (m, theirs) in zip(self.processes, pipes, strict=True):
            p.start()
            theirs.close()
            self.free.put(m)
        self.waiters = ThreadPoolExecutor(n, thread_name_prefix="E3-search")  # one per process

    def submit(self, request: bytes) -> Future:
        """`work(request)` in the first free process: a Future of its answer (bytes)."""
        return self.waiters.submit(self._ask, request)

    def _ask(self, request: bytes) -> bytes:
        conn = self.free.get()
        try:
            conn.send_bytes(request)
            reply = conn.recv_bytes()
        except (EOFError, OSError):  # it ended (killed, out of memory)
            raise SearchFailed("a search process ended; restart E3") from None
        finally:
            self.free.put(conn)  # an ended one too: its next request fails at once, none waits
        kind, rest = reply[:1], reply[1:]
        if kind == REFUSED:
            raise SuiteError(rest.decode())
        if kind == FAILED:
            raise SearchFailed(rest.decode())
        return rest

    def close(self) -> None:
        """End the processes (each ends when its pipe closes)."""
        self.waiters.shutdown()
        while not self.free.empty():
            self.free.get().close()
        for p in self.processes:
            p.join(10)


def _serve(work: Work, conn: Connection, close: Sequence[Connection | socket.socket]) -> None:
    """A search process: answer requests until the parent closes the pipe (or ends)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's; its exit ends this one
    for c in close:  # the parent's ends of the pipes and its listening socket: the parent's alone
        c.close()
    while True:
        try:
            request = conn.recv_bytes()
        except EOFError:
            return
        conn.send_bytes(_done(work, request))


def _done(work: Work, request: bytes) -> bytes:
    """`work`'s answer, or its one-line refusal, or the name of what failed."""
    try:
        return ANSWER + work(request)
    except SuiteError as e:
        return REFUSED + str(e).encode()
    except Exception as e:
        log.exception("E3: a search failed")
        return FAILED + f"{type(e).__name__} in a search process".encode()
