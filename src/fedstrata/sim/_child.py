"""What a forked helper process does first so that it never outlives its parent."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys

__all__ = ["die_with_parent"]

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent_pid: int) -> None:
    """Leave Ctrl-C to the parent and exit when the parent dies.

    Ignores SIGINT (a terminal sends it to the whole process group; the parent stops
    the run and this process is then told to stop), and on Linux asks for SIGKILL when
    the parent dies (``PR_SET_PDEATHSIG``; strictly, when the parent's forking thread
    ends). Exits at once if the parent is already gone.

    Args:
        parent_pid: the process id of the parent, read *before* forking.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent_pid:  # it died before the signal was armed
        os._exit(0)
