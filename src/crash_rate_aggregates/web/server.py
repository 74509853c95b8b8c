"""`crash-aggregates serve`: the dashboard on uvicorn, over a store opened read-only.

The listening socket is bound here, before uvicorn starts, so that a port in use (or an address
that cannot be listened on) is one line and exit status 1, as a missing store is, instead of
uvicorn's log lines.
"""

from __future__ import annotations

import errno
import signal
import socket

import uvicorn

from ..errors import CrashAggregatesError
from ..stores.base import redact
from .app import create_app
from .readonly import Limits, open_readonly


class ListenError(CrashAggregatesError):
    """The address and port cannot be listened on (in use, not allowed, unknown host)."""


def listen(host: str, port: int) -> socket.socket:
    """A socket bound and listening on host:port (port 0: one the system picks)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # as uvicorn chooses
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        # Lets a restarted server take its port back from connections still closing; a port
        # another socket listens on stays refused.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(2048)
    except OSError as exc:
        listener.close()
        if exc.errno == errno.EADDRINUSE:
            raise ListenError(f"port {port} on {host} is in use (another server listens "
                              "there): stop it or choose another --port") from None
        reason = exc.strerror or str(exc)
        raise ListenError(f"cannot listen on {host} port {port}: {reason}") from None
    listener.set_inheritable(True)
    return listener


def serve(db_url: str | None, host: str, port: int, limits: Limits,
          family: str | None = None) -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM: a clean stop, exit status 0). A store that
    is missing or lacks its tables, and an address that cannot be listened on, raise a
    CrashAggregatesError (one line) before anything runs. `family`: the ping family shown when
    a request names none (default: the one the store holds, else legacy)."""
    store = open_readonly(db_url, limits, family)
    try:
        listener = listen(host, port)
    except ListenError:
        store.close()
        raise
    port = listener.getsockname()[1]
    app = create_app(store, close_store=True)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="info",
                                           server_header=False))
    # SIGTERM (a service manager's stop) is a clean stop, status 0, whenever it comes: the
    # server, starting or running, finishes its requests and returns (uvicorn takes the signal
    # itself while it runs, and hands it back to this handler when it has shut down).
    signal.signal(signal.SIGTERM, lambda signum, frame: setattr(server, "should_exit", True))
    print(f"crash-aggregates dashboard on http://{host}:{port}/ reading {redact(store.url)} "
          f"read-only (each request limited to {limits.timeout_ms:,} ms, each query to "
          f"{limits.max_rows:,} rows; family {store.default_family} unless a request asks "
          f"for another of {', '.join(store.families)})", flush=True)
    try:
        server.run(sockets=[listener])
    except KeyboardInterrupt:
        pass  # uvicorn has shut down cleanly and passes Ctrl-C on: the way to stop it
    finally:
        listener.close()
