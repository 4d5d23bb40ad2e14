"""Device profiles: the precision speed factors, their CSV columns, the compute leg."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstrata.errors import ConfigError, DataError
from fedstrata.scheduling import TimePredictor
from fedstrata.sim import ProfileTable
from fedstrata.sim.profiles import ProfileDistribution
from fedstrata.sim.registry_bridge import profile_table, registry_profiles, with_registered

OLD_HEADER = "device_id,flops,memory_gb,uplink_mbps,downlink_mbps,latency_ms,availability"


def table(n: int = 4, bf16: float = 2.0, fp16: float = 0.25) -> ProfileTable:
    return ProfileTable(
        flops=np.geomspace(1e8, 1e10, n),
        memory_gb=np.full(n, 2.0),
        uplink_bps=np.full(n, 1e7),
        downlink_bps=np.full(n, 5e7),
        latency_s=np.full(n, 0.02),
        availability=np.ones(n),
        bf16_speedup=np.linspace(1.0, bf16, n),
        fp16_speedup=np.full(n, fp16),
    )


def test_speed_factors_default_to_one_and_divide_the_compute_leg() -> None:
    t = table()
    plain = ProfileTable(t.flops, t.memory_gb, t.uplink_bps, t.downlink_bps, t.latency_s,
                         t.availability)  # fmt: skip
    np.testing.assert_array_equal(plain.bf16_speedup, np.ones(4))
    ids, examples = np.arange(4), np.full(4, 100)
    down32, fp32, up32 = t.legs_s(ids, examples, 1e6, 1000, 1000)
    down16, bf16, up16 = t.at_precision("bf16").legs_s(ids, examples, 1e6, 1000, 1000)
    np.testing.assert_allclose(bf16, fp32 / t.bf16_speedup, rtol=1e-12)
    np.testing.assert_array_equal(down16, down32)  # links do not depend on precision
    np.testing.assert_array_equal(up16, up32)
    _, fp16, _ = t.at_precision("fp16").legs_s(ids, examples, 1e6, 1000, 1000)
    np.testing.assert_allclose(fp16, fp32 * 4, rtol=1e-12)  # factor 0.25: slower
    np.testing.assert_array_equal(plain.at_precision("bf16").legs_s(ids, examples, 1e6, 0, 0)[1],
                                  fp32)  # fmt: skip


def test_bad_factors_and_precisions_are_refused() -> None:
    t = table()
    with pytest.raises(DataError, match="bf16_speedup: speed factors must be > 0"):
        ProfileTable(t.flops, t.memory_gb, t.uplink_bps, t.downlink_bps, t.latency_s,
                     t.availability, bf16_speedup=np.zeros(4))  # fmt: skip
    with pytest.raises(DataError, match=r"fp16_speedup has shape \(2,\)"):
        ProfileTable(t.flops, t.memory_gb, t.uplink_bps, t.downlink_bps, t.latency_s,
                     t.availability, fp16_speedup=np.ones(2))  # fmt: skip
    with pytest.raises(ConfigError, match="precision must be one of fp32, bf16, fp16"):
        t.at_precision("auto")
    with pytest.raises(ConfigError, match="bf16_speedup and fp16_speedup must be > 0"):
        ProfileDistribution(fp16_speedup=0.0)


def test_csv_round_trip_keeps_the_speed_factors(tmp_path: Path) -> None:
    t = table(5, bf16=3.0, fp16=0.4)
    path = tmp_path / "profiles.csv"
    t.save_csv(path)
    assert path.read_text().splitlines()[0] == OLD_HEADER + ",bf16_speedup,fp16_speedup"
    back = ProfileTable.load_csv(path, 5)
    for name in ("flops", "memory_gb", "uplink_bps", "downlink_bps", "latency_s",
                 "availability", "bf16_speedup", "fp16_speedup"):  # fmt: skip
        np.testing.assert_allclose(getattr(back, name), getattr(t, name), rtol=1e-15)


def test_csv_without_the_factor_columns_means_no_speedup(tmp_path: Path) -> None:
    path = tmp_path / "old.csv"
    path.write_text(f"{OLD_HEADER}\n0,1e9,4,20,100,40,1.0\n1,2e9,4,20,100,40,1.0\n")
    back = ProfileTable.load_csv(path, 2)
    np.testing.assert_array_equal(back.bf16_speedup, [1.0, 1.0])
    np.testing.assert_array_equal(back.fp16_speedup, [1.0, 1.0])
    bad = tmp_path / "bad.csv"
    bad.write_text(f"{OLD_HEADER},bf16_speedup\n0,1e9,4,20,100,40,1.0,-2\n")
    with pytest.raises(DataError, match="bf16_speedup"):
        ProfileTable.load_csv(bad, 1)


def test_generated_profiles_carry_the_configured_factors() -> None:
    dist = ProfileDistribution(bf16_speedup=1.7, fp16_speedup=0.5)
    t = ProfileTable.generate(6, dist, np.random.default_rng(0))
    np.testing.assert_array_equal(t.bf16_speedup, np.full(6, 1.7))
    np.testing.assert_array_equal(t.fp16_speedup, np.full(6, 0.5))
    same = ProfileTable.generate(6, ProfileDistribution(), np.random.default_rng(0))
    np.testing.assert_array_equal(t.flops, same.flops)  # the factors draw nothing


def test_registry_rows_keep_the_factors_and_the_predictor_uses_them() -> None:
    t = table().at_precision("bf16")
    rows = registry_profiles(t)
    np.testing.assert_array_equal(rows.bf16_speedup, t.bf16_speedup)
    back = profile_table(rows)
    np.testing.assert_array_equal(back.fp16_speedup, t.fp16_speedup)
    merged = with_registered(t, rows.take(np.array([1, 2])))
    assert merged.precision == "bf16"  # the run's precision survives the registry merge
    fp32 = TimePredictor.from_profiles(rows, 1e6)
    bf16 = TimePredictor.from_profiles(rows, 1e6, precision="bf16")
    np.testing.assert_allclose(bf16.state.prior_s, fp32.state.prior_s / t.bf16_speedup)
    one = np.ones(4)
    np.testing.assert_allclose(bf16.state.prior_s, t.legs_s(np.arange(4), one, 1e6, 0, 0)[1])


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    examples=st.integers(0, 10**7),
    flops_per_example=st.floats(1.0, 1e12),
    down_bytes=st.integers(0, 10**10),
    up_bytes=st.integers(0, 10**10),
    precision=st.sampled_from(["fp32", "bf16", "fp16"]),
)
def test_client_legs_equal_the_vectorised_legs(
    *,
    seed: int,
    examples: int,
    flops_per_example: float,
    down_bytes: int,
    up_bytes: int,
    precision: str,
) -> None:
    rng = np.random.default_rng(seed)
    table = ProfileTable.generate(7, ProfileDistribution(), rng)
    table = replace(
        table, bf16_speedup=rng.uniform(0.5, 3, 7), fp16_speedup=rng.uniform(0.2, 2, 7)
    ).at_precision(precision)
    for cid in range(len(table)):
        legs = table.legs_s(
            np.array([cid]), np.array([examples]), flops_per_example, down_bytes, up_bytes
        )
        expected = tuple(float(leg[0]) for leg in legs)
        got = table.client_legs_s(cid, examples, flops_per_example, down_bytes, up_bytes)
        assert got == expected
        assert all(type(leg) is float for leg in got)
