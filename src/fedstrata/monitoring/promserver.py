"""A private Prometheus server that scrapes given targets (tests, benchmarks, a local look).

:class:`PrometheusServer` writes a configuration into a directory of its own (scrape
and rule evaluation every ``interval_s``, the given rule files), starts the Prometheus
binary on a free loopback port, waits until it is ready (polling ``/-/ready``, never a
blind sleep) and stops it on exit. :meth:`PrometheusServer.query` runs an instant PromQL
query over the HTTP API and :meth:`PrometheusServer.wait_for` polls one until a
predicate holds. The server's own errors end up in ``prometheus.log`` in its directory.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from fedstrata.errors import ConfigError, TransportError

__all__ = ["PrometheusServer", "Sample", "find_prometheus"]

Sample = tuple[dict[str, str], float]
"""One result of an instant query: the series' labels and its value."""


def find_prometheus() -> str | None:
    """The Prometheus binary on ``PATH`` (or ``/usr/bin/prometheus``), or None."""
    found = shutil.which("prometheus")
    if found is None and Path("/usr/bin/prometheus").is_file():
        found = "/usr/bin/prometheus"
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrometheusServer:
    """A Prometheus process of its own (see the module docstring); a context manager.

    Args:
        directory: where its configuration, data and log go (created).
        targets: ``host:port`` addresses to scrape (job ``fedstrata``).
        rule_files: alerting-rule files to load.
        interval_s: scrape and rule-evaluation interval.
        binary: the Prometheus binary (default: :func:`find_prometheus`).
        ready_timeout_s: how long to wait for it to become ready.

    Raises:
        ConfigError: no Prometheus binary.
    """

    def __init__(
        self,
        directory: Path,
        targets: Sequence[str],
        *,
        rule_files: Sequence[Path] = (),
        interval_s: float = 1.0,
        binary: str | None = None,
        ready_timeout_s: float = 30.0,
    ) -> None:
        found = binary or find_prometheus()
        if found is None:
            raise ConfigError(
                "the Prometheus server binary is not installed (apt install prometheus)"
            )
        self.binary, self.directory = found, directory
        self.targets, self.rule_files = list(targets), list(rule_files)
        self.interval_s, self.ready_timeout_s = interval_s, ready_timeout_s
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def _write_config(self) -> Path:
        every = f"{max(1, round(self.interval_s))}s"
        config = {
            "global": {"scrape_interval": every, "evaluation_interval": every},
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [
                {"job_name": "fedstrata", "static_configs": [{"targets": self.targets}]}
            ],
        }
        path = self.directory / "prometheus.yml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        return path

    def start(self) -> PrometheusServer:
        """Start the process and wait until it is ready.

        Raises:
            TransportError: it exited or was not ready within ``ready_timeout_s``.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        config, self.port = self._write_config(), _free_port()
        log = (self.directory / "prometheus.log").open("wb")
        data = self.directory / "data"
        args = [
            self.binary, f"--config.file={config}", f"--storage.tsdb.path={data}",
            f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn",
        ]  # fmt: skip
        with log:
            try:
                self._process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
            except OSError as exc:
                raise TransportError(f"cannot start Prometheus ({self.binary}): {exc}") from exc
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise TransportError(f"Prometheus exited at start: {self._log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)  # polling the readiness endpoint
        raise TransportError(
            f"Prometheus not ready after {self.ready_timeout_s} s: {self._log_tail()}"
        )

    def _log_tail(self) -> str:
        path = self.directory / "prometheus.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else "(no log)"

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>``; returns its ``data``.

        Raises:
            TransportError: the request failed or the API reported an error.
        """
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=5) as r:
                body = json.loads(r.read())
        except (OSError, ValueError) as exc:
            raise TransportError(f"Prometheus API {path} failed: {exc}") from exc
        if body.get("status") != "success":
            raise TransportError(f"Prometheus API {path}: {body.get('error', body)}")
        return body["data"]

    def query(self, promql: str) -> list[Sample]:
        """An instant query's vector result: (labels, value) per series."""
        data = self.api("query", query=promql)
        return [(dict(r["metric"]), float(r["value"][1])) for r in data.get("result", [])]

    def wait_for(
        self,
        promql: str,
        predicate: Callable[[list[Sample]], bool],
        timeout_s: float = 30.0,
        poll_s: float = 0.2,
    ) -> list[Sample]:
        """Poll ``promql`` until ``predicate`` holds for its result; returns that result.

        Raises:
            TransportError: it did not hold within ``timeout_s`` (names the last result).
        """
        deadline = time.monotonic() + timeout_s
        result: list[Sample] = []
        while time.monotonic() < deadline:
            result = self.query(promql)
            if predicate(result):
                return result
            time.sleep(poll_s)  # the next scrape or rule evaluation
        raise TransportError(f"{promql!r}: not as expected after {timeout_s} s (last {result})")

    def stop(self) -> None:
        """Terminate the process (kill it if it does not exit in 10 s). Idempotent."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
