"""A private, throw-away Ceph radosgw (a real S3-compatible server) for tests and benches.

Not part of fedstrata's API: the conformance suite and ``bench/resilience.py`` start one
with :func:`radosgw` to test the object tier against a real server. It runs one monitor,
one OSD on ``memstore`` (RAM; nothing touches a disk) and one gateway, all in the
foreground as children of this process, on free loopback ports, with authentication
off inside the cluster (the gateway still checks S3 signatures against the user it
creates). Everything lives in one temporary directory and is killed and removed when the
context exits.

Single-node settings that matter: ``osd pool default size = 1``; with auth none the
messenger needs ``ms mon client mode = crc secure`` and ``ms client mode = crc secure``
or the daemons loop at start; a 10 ms Paxos propose interval (default 1 s) and one PG
per pool let the gateway create its pools in about a second, so the whole start, bucket
included, takes about 2 s (14 s with the defaults).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["BINARIES", "RadosGateway", "missing_binaries", "radosgw"]

BINARIES = ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "ceph", "monmaptool")


@dataclass(frozen=True)
class RadosGateway:
    """A running gateway: where it listens, its S3 user and a bucket made for you."""

    endpoint_url: str
    key: str
    secret: str
    bucket: str
    start_s: float

    def storage_options(self) -> dict[str, Any]:
        """fsspec/s3fs options that reach this gateway."""
        return {"endpoint_url": self.endpoint_url, "key": self.key, "secret": self.secret}

    def url(self, prefix: str) -> str:
        """``s3://BUCKET/PREFIX`` in the gateway's bucket."""
        return f"s3://{self.bucket}/{prefix.strip('/')}"


def missing_binaries() -> list[str]:
    """The Ceph programs :func:`radosgw` needs that are not on PATH."""
    return [name for name in BINARIES if shutil.which(name) is None]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _conf(root: Path, fsid: str, mon_port: int, rgw_port: int) -> str:
    return f"""[global]
fsid = {fsid}
mon host = v2:127.0.0.1:{mon_port}
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc secure
ms client mode = crc secure
ms bind ipv4 = true
public addr = 127.0.0.1
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 1
osd pool default pgp num = 1
osd pool default pg autoscale mode = off
mon max pg per osd = 1000
osd crush chooseleaf type = 0
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail crit = 0
mon data avail warn = 0
paxos propose interval = 0.01
paxos min wait = 0.01
mon osd reporter subtree level = osd
keyring = /dev/null
run dir = {root}/run
crash dir = {root}/crash
log file = {root}/log/$name.log
admin socket = {root}/run/$name.asok
mon data = {root}/mon/$id
osd data = {root}/osd/$id
osd objectstore = memstore
memstore device bytes = 4294967296
[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:{rgw_port}
rgw data = {root}/rgw
rgw dns name = 127.0.0.1
"""


def _with_parent_death_signal(cmd: list[str]) -> list[str]:
    """``cmd`` run so the kernel SIGKILLs it when this process dies, however it dies (a
    test run killed by a timeout leaves no Ceph daemon behind), where util-linux's
    ``setpriv`` exists; the context's exit stops the daemons in any case."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--", *cmd] if setpriv else cmd


class _Cluster:
    """The daemons of one private cluster (children of this process)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.conf = root / "ceph.conf"
        self.procs: list[subprocess.Popen[bytes]] = []

    def run(self, *args: str, timeout_s: float = 30.0) -> str:
        cmd = [args[0], "-c", str(self.conf), *args[1:]]
        done = subprocess.run(cmd, capture_output=True, timeout=timeout_s, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr.decode()[-2000:]}")
        return done.stdout.decode()

    def daemon(self, *args: str) -> None:
        log = open(self.root / "log" / f"{args[0]}.out", "wb")  # noqa: SIM115
        cmd = [args[0], "-f", "-c", str(self.conf), *args[1:]]
        guarded = _with_parent_death_signal(cmd)
        self.procs.append(subprocess.Popen(guarded, stdout=log, stderr=subprocess.STDOUT))
        log.close()

    def check_alive(self) -> None:
        for proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.kill()
        for proc in self.procs:
            proc.wait(timeout=30)


def _poll(what: str, probe: Any, cluster: _Cluster, deadline: float) -> None:
    """Call ``probe()`` until it returns true; a daemon that died fails at once."""
    while not probe():
        cluster.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"radosgw test cluster: {what} not ready in time")
        time.sleep(0.05)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _start(cluster: _Cluster, rgw_port: int, deadline: float) -> None:
    root, fsid = cluster.root, str(uuid.uuid4())
    for sub in ("run", "log", "mon", "osd/0", "rgw", "crash"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    mon_port = _free_port()
    cluster.conf.write_text(_conf(root, fsid, mon_port, rgw_port))
    monmap = str(root / "monmap")
    mon_addr = f"[v2:127.0.0.1:{mon_port}]"
    create = ["monmaptool", "--create", "--addv", "a", mon_addr, "--fsid", fsid, monmap]
    subprocess.run(create, capture_output=True, check=True)
    cluster.run("ceph-mon", "--mkfs", "-i", "a", "--monmap", monmap)
    cluster.daemon("ceph-mon", "-i", "a")
    cluster.run("ceph", "osd", "create")
    cluster.run("ceph-osd", "-i", "0", "--mkfs")
    cluster.daemon("ceph-osd", "-i", "0")
    cluster.daemon("radosgw", "-n", "client.rgw")
    _poll("radosgw", lambda: _http_ok(f"http://127.0.0.1:{rgw_port}/"), cluster, deadline)


def _make_bucket(gateway: RadosGateway) -> None:
    import s3fs  # type: ignore[import-untyped]

    fs = s3fs.S3FileSystem(**gateway.storage_options())
    fs.mkdir(gateway.bucket)


@contextmanager
def radosgw(bucket: str = "fedstrata", timeout_s: float = 90.0) -> Iterator[RadosGateway]:
    """Start a private radosgw with an S3 user and ``bucket``; stop and remove it after.

    Raises:
        RuntimeError: a Ceph binary is missing, or a daemon or command failed.
        TimeoutError: the gateway did not answer within ``timeout_s``.
    """
    missing = missing_binaries()
    if missing:
        raise RuntimeError(f"radosgw test cluster needs {', '.join(missing)} on PATH")
    start = time.monotonic()
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fedstrata-rgw-")))
        cluster = _Cluster(root)
        stack.callback(cluster.stop)
        rgw_port = _free_port()
        _start(cluster, rgw_port, start + timeout_s)
        key, secret = "FEDSTRATA" + uuid.uuid4().hex[:11].upper(), uuid.uuid4().hex
        cluster.run(
            "radosgw-admin", "-n", "client.rgw", "user", "create", "--uid=fedstrata",
            "--display-name=fedstrata", f"--access-key={key}", f"--secret={secret}",
        )  # fmt: skip
        endpoint = f"http://127.0.0.1:{rgw_port}"
        _make_bucket(RadosGateway(endpoint, key, secret, bucket, 0.0))
        yield RadosGateway(endpoint, key, secret, bucket, time.monotonic() - start)
