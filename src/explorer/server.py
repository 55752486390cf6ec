"""Serving the explorer's app with uvicorn: on a socket bound first (a port in use is one line, not
a traceback), in the foreground (E3) or in a background thread (the browser test, the benchmark,
the screenshot script)."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn
from starlette.applications import Starlette

from src.errors import SuiteError
from src.explorer.app import LOOPBACK_HOSTS

# E3's CPU threads unless --threads says otherwise: every interaction is one query's small tensors,
# where a second intra-op thread costs more in OpenMP hand-offs than it saves (and on a busy machine
# those stall for tens of ms)
THREADS = 1


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only."""
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (0: any free port), or one line saying why not."""
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as e:
        raise SuiteError(f"--host {host}: not an address of this machine ({e})") from None
    # proto TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on sockets that say TCP, and
    # with Nagle on, each answer on a kept-alive connection waited 40 ms for a delayed ACK
    sock = socket.socket(info[0], socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.bind(info[4])
    except OSError as e:
        sock.close()
        why = "is in use" if e.errno == errno.EADDRINUSE else f"cannot be opened ({e.strerror})"
        raise SuiteError(f"port {port} on {host} {why}: choose another with --port") from None
    return sock


def _named(host: str) -> str:
    """An address as a URL or a Host header names it (an IPv6 address in brackets)."""
    return f"[{host}]" if ":" in host else host


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{_named(host)}:{port}/"


def host_names(host: str, sock: socket.socket) -> list[str]:
    """The Host names a loopback explorer answers: loopback's own, --host as given and the
    address it bound (127.0.0.2, a name of this machine): its printed URL works, another site's
    name does not (DNS rebinding)."""
    return list(dict.fromkeys([*LOOPBACK_HOSTS, _named(host), _named(sock.getsockname()[0])]))


def _server(app: Starlette) -> uvicorn.Server:
    return uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    )


def serve(app: Starlette, sock: socket.socket) -> None:
    """Serve until Ctrl-C."""
    _server(app).run(sockets=[sock])


@contextlib.contextmanager
def serving(app: Starlette, timeout: float = 30.0) -> Iterator[str]:
    """Serve `app` on a free loopback port in a thread; yield its URL; stop it on exit."""
    sock = listen("127.0.0.1", 0)
    server = _server(app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the explorer's server did not start")
        time.sleep(0.02)
    try:
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
