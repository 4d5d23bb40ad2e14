"""Serve a dashboard from a background thread: for tests, benchmarks and notebooks.

:class:`BackgroundServer` is a context manager that owns one uvicorn server on its own
thread and event loop; entering it returns once the socket listens (port 0 picks a
free port, read back from the socket), leaving it asks the server to exit and joins
the thread. ``fedstrata dashboard`` runs uvicorn in the foreground instead.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType

import uvicorn
from starlette.applications import Starlette

from fedstrata.errors import FedstrataError

__all__ = ["BackgroundServer"]


class BackgroundServer:
    """Runs ``app`` on ``host:port`` in a thread while the ``with`` block lasts.

    Args:
        app: the ASGI app (e.g. :func:`~fedstrata.monitoring.dashboard.create_app`).
        host: address to listen on.
        port: port, 0 for a free one (:attr:`url` tells which).
        start_timeout_s: how long entering waits for the socket.
    """

    def __init__(
        self, app: Starlette, *, host: str = "127.0.0.1", port: int = 0,
        start_timeout_s: float = 10.0,
    ) -> None:  # fmt: skip
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="dashboard", daemon=True)
        self._host = host
        self._timeout_s = start_timeout_s
        self.url = ""

    def __enter__(self) -> BackgroundServer:
        """Start serving; returns once the server listens.

        Raises:
            FedstrataError: the server did not start within ``start_timeout_s``.
        """
        self._thread.start()
        deadline = time.monotonic() + self._timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._stop()
                raise FedstrataError(
                    f"dashboard server did not start on {self._host} in {self._timeout_s} s"
                )
            time.sleep(0.01)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://{self._host}:{port}/"
        return self

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop the server and join its thread."""
        self._stop()

    def _stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
