"""Compute something in a forked child process while the caller does other work.

The simulator uses it to build the dataset (which imports scikit-learn and reads
files) while the main process imports the training framework: the two start-up
costs overlap instead of adding up.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import pickle
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, Generic, TypeVar

from fedstrata.errors import DataError, FedstrataError
from fedstrata.sim._child import die_with_parent

__all__ = ["Prefetch"]

log = logging.getLogger(__name__)
T = TypeVar("T")


def _child(
    conn: Connection, parent_pid: int, fn: Callable[..., Any], args: tuple[Any, ...]
) -> None:
    die_with_parent(parent_pid)
    try:
        value = fn(*args)
    except Exception as exc:  # sent to the parent, which raises it there
        try:
            conn.send(("error", pickle.dumps(exc)))
        except Exception:
            conn.send(("error_text", f"{type(exc).__name__}: {exc}"))
    else:
        conn.send(("ok", value))
    conn.close()


class Prefetch(Generic[T]):
    """``fn(*args)`` computed in a forked child; :meth:`result` waits for it.

    Where ``fork`` is unavailable, or ``background`` is false, the call runs inline.
    The result travels back pickled, so it should be data (arrays, dataclasses).
    """

    def __init__(self, fn: Callable[..., T], *args: Any, background: bool = True) -> None:
        self._value: T | None = None
        self._done = False
        if not background or "fork" not in mp.get_all_start_methods():
            self._value, self._done = fn(*args), True
            return
        ctx = mp.get_context("fork")
        self._conn, child = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_child, args=(child, os.getpid(), fn, args), daemon=True)
        self._proc.start()
        child.close()

    def result(self) -> T:
        """The value, or the child's exception raised here.

        Raises:
            FedstrataError: whatever ``fn`` raised (re-raised), or DataError when the
                child died without an answer.
        """
        if self._done:
            return self._value  # type: ignore[return-value]
        try:
            kind, payload = self._conn.recv()
        except EOFError:
            raise DataError("the background data loader died without an answer") from None
        finally:
            self._proc.join()
        if kind == "ok":
            self._value, self._done = payload, True
            return payload  # type: ignore[no-any-return]
        if kind == "error":
            raise pickle.loads(payload)
        raise FedstrataError(payload)
