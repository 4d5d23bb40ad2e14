"""The public surface of fedstrata.secagg."""

from __future__ import annotations

from fedstrata import secagg


def test_all_names_resolve_and_are_sorted() -> None:
    assert sorted(secagg.__all__) == list(secagg.__all__)
    for name in secagg.__all__:
        assert getattr(secagg, name) is not None


def test_core_entry_points_are_exported() -> None:
    for name in (
        "SecAggConfig",
        "derive_parameters",
        "ClientProtocol",
        "ServerProtocol",
        "simulate_round",
        "TwoTierSecAgg",
        "TreeSecAgg",
        "MaskPool",
    ):
        assert name in secagg.__all__
