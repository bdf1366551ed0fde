"""The address `crowdpatch serve` listens on, taken before any link is printed, and the host its links name."""

from __future__ import annotations

import errno
import socket

LISTEN_BACKLOG = 2048
"""uvicorn's default backlog."""


class CannotListen(OSError):
    """The host and port cannot be listened on; the message says why in one line."""


def listening_socket(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A TCP socket listening on ``host:port``, made the way uvicorn makes its own.

    ``IPPROTO_TCP`` is given explicitly: a socket made without it adds ~40 ms per request (Nagle).
    ``SO_REUSEADDR`` lets a restarted server take its port at once, yet never a port another
    process is listening on. Binding here, before anything is printed, is what lets ``serve``
    say in one line that the port is busy instead of printing links to another server.
    ``reuse_port``: one of several server processes on the port, each listening on its own socket
    (:mod:`crowdpatch.server.processes`).
    """
    sock = bound_socket(host, port, reuse_port)
    # Listening at once: a link opened while the app is still being built waits in the queue instead of being refused.
    sock.listen(LISTEN_BACKLOG)
    sock.set_inheritable(True)
    return sock


def bound_socket(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A TCP socket bound to ``host:port``, not listening yet (:class:`CannotListen` when the port is taken).

    With ``reuse_port`` (``SO_REUSEPORT``) other sockets of this user may bind the port too; only the
    listening ones are handed connections, so a bound one reserves the port for its server's processes.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family=family, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            hint = f"port {port} is in use by another server: choose another --port"
        else:
            hint = f"{exc.strerror or exc} (is {host} an address of this machine? see --host)"
        raise CannotListen(exc.errno, f"cannot listen on {host}:{port}: {hint}") from exc
    return sock


def link_host(host: str) -> str:
    """The host to put into printed links: this machine's name when listening on every interface, IPv6 in brackets."""
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()
    return f"[{host}]" if ":" in host else host
