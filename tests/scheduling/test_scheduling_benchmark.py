"""Device benchmark: throughput from an injected clock, memory, RTT to a loopback server."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest

from fedstrata.errors import ConfigError, TransportError
from fedstrata.scheduling import DeviceMeasurement, measure_device, measure_rtt, relative_speed


def fake_clock(step_s: float) -> Callable[[], float]:
    """A clock that advances ``step_s`` every time it is read."""
    now = [0.0]

    def read() -> float:
        now[0] += step_s
        return now[0]

    return read


@pytest.fixture
def server() -> Iterator[tuple[str, int]]:
    """A listening loopback TCP socket on a free port (the kernel completes handshakes)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield "127.0.0.1", sock.getsockname()[1]


def test_throughput_is_examples_over_elapsed_time() -> None:
    calls: list[int] = []

    def train() -> int:
        calls.append(1)
        return 250

    m = measure_device(train, flops_per_example=4e6, repeats=3, warmup=2, clock=fake_clock(0.5))
    assert len(calls) == 5  # warm-up calls are not timed
    assert m.throughput_eps == pytest.approx(500.0)  # 250 examples / 0.5 s
    assert m.cpu_score == pytest.approx(500.0 * 4e6 / 1e9)
    assert m.rtt_ms is None
    assert m.latency_ms == 0.0
    assert 0 < m.memory_available_gb <= m.memory_total_gb


def test_rtt_to_a_loopback_server(server: tuple[str, int]) -> None:
    rtt = measure_rtt(*server, attempts=3)
    assert 0 <= rtt < 2000
    fixed = measure_rtt(*server, attempts=3, clock=fake_clock(0.002))
    assert fixed == pytest.approx(2.0)
    m = measure_device(
        lambda: 10, flops_per_example=1.0, rtt_target=server, clock=fake_clock(0.001)
    )
    assert m.rtt_ms == pytest.approx(1.0)
    assert m.latency_ms == pytest.approx(0.5)


def test_unreachable_server_raises_transport_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(TransportError, match=f"127.0.0.1:{port}"):
        measure_rtt("127.0.0.1", port, attempts=1, timeout_s=1.0)


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ConfigError, match="repeats"):
        measure_device(lambda: 1, flops_per_example=1.0, repeats=0)
    with pytest.raises(ConfigError, match="train_fn"):
        measure_device(lambda: 0, flops_per_example=1.0, warmup=0)
    with pytest.raises(ConfigError, match="attempts"):
        measure_rtt("127.0.0.1", 1, attempts=0)
    with pytest.raises(ConfigError, match="flops_per_example"):
        DeviceMeasurement(1.0, 0.0, 1.0, 1.0, None, 1)


def test_relative_speed_is_the_ratio_of_median_throughputs() -> None:
    now = [0.0]
    order: list[str] = []

    def clock() -> float:
        return now[0]

    def run(name: str, seconds: float) -> Callable[[], int]:
        def train() -> int:
            order.append(name)
            now[0] += seconds
            return 100

        return train

    # 100 examples in 0.4 s (fp32) vs 0.2 s (bf16): twice as fast
    fast = relative_speed(run("a", 0.4), run("b", 0.2), repeats=3, clock=clock)
    assert fast == pytest.approx(2.0)
    assert order == ["a", "b"] * 4  # warm-up, then alternating timed calls
    slow = relative_speed(run("a", 0.1), run("b", 0.3), repeats=1, warmup=0, clock=clock)
    assert slow == pytest.approx(1 / 3)
    with pytest.raises(ConfigError, match="repeats"):
        relative_speed(run("a", 0.1), run("b", 0.1), repeats=0)
    with pytest.raises(ConfigError, match="speed factors"):
        DeviceMeasurement(1.0, 1.0, 1.0, 1.0, None, 1, bf16_speedup=0.0)
