"""Write a run's report in a process of its own: ``python -m fedstrata.monitoring.report_job
RUN_DIR``, started by :func:`spawn_report` so that a short run's command line returns
without waiting for the figures (the report is written atomically: a reader sees the
whole file or none). Errors go to ``RUN_DIR/report.log``; ``fedstrata report RUN_DIR``
writes the report in the foreground.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

__all__ = ["REPORT_LOG", "spawn_report"]

REPORT_LOG = "report.log"


def spawn_report(run_dir: Path) -> subprocess.Popen[bytes]:
    """Start writing ``run_dir``'s report in a detached process and return it.

    Raises:
        OSError: the process could not be started.
    """
    with (run_dir / REPORT_LOG).open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "fedstrata.monitoring.report_job", str(run_dir)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            env=dict(os.environ),
        )  # fmt: skip


def _main(argv: list[str]) -> int:
    from fedstrata.errors import FedstrataError
    from fedstrata.monitoring.report import write_report

    (run_dir,) = argv
    try:
        write_report(Path(run_dir))
    except FedstrataError as exc:
        print(f"report of {run_dir} not written: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
