"""The deployment commands as a user runs them (a real process, real logging)."""

import os
import subprocess
import sys

from rthelpers import SMALL, free_port


def test_client_without_a_server_logs_each_attempt_and_exits_nonzero_after_its_retries():
    """Issue 11 defects 3 and 17: with -v every connection attempt and backoff shows;
    after ``--retries`` failures the client exits non-zero with a clear message."""
    port = free_port()
    sets = [arg for item in SMALL for arg in ("--set", item)]
    command = [
        sys.executable, "-c", "from fedstrata.cli import main; main()", "client", *sets,
        "--server", f"127.0.0.1:{port}", "--client-id", "0", "--token", "t",
        "--retries", "1", "--connect-timeout", "0.3", "-v",
    ]  # fmt: skip
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run(
        command, check=False, capture_output=True, text=True, timeout=120, env=env
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert output.count(f"client 0: connecting to 127.0.0.1:{port}") == 2, output
    assert "reconnecting in" in output
    assert "gave up after 1 reconnection attempts" in output
