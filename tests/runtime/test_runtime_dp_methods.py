"""Adaptive clipping, DP-FTRL and switch_on_plateau at the runtime's center (issue 13).

For the same configuration and seed the deployment over loopback gRPC trains the
simulator's model bit for bit and spends its ε: the same hooks, codec and cohort
selector are built for both (builders_privacy, builders_dp). A client that dies in a
round is a dropout: it is compared with the simulator's ``devices.dropout_rate``
dropping the same clients in the same rounds."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from rthelpers import SMALL, run_federation, tokens_for

from fedstrata.api import run
from fedstrata.builders_dp import CEILING_FACTOR, client_clip_norm
from fedstrata.config import load_config
from fedstrata.errors import ConfigError, RunEndedError
from fedstrata.privacy import CentralGaussian, FixedClip
from fedstrata.privacy.ftrl import EpochOrder
from fedstrata.runtime import CenterServer, GrpcLink, TokenTable, deployment
from fedstrata.runtime.dp_center import DpPart
from fedstrata.sim.intake import dropped_out

DP = [*SMALL, "privacy.epsilon=2", "privacy.mechanism=central"]
ADAPTIVE = [*DP, "privacy.adaptive_clip=true", "rounds.rounds=3"]
FTRL = [*DP, "privacy.tree_aggregation=true", "rounds.clients_per_round=2", "rounds.rounds=4"]
PLATEAU = [
    *DP, "rounds.rounds=6", "rounds.eval_every=1", "privacy.schedule=staged",
    "privacy.stage_weights=[0.6,0.4]", "privacy.switch_on_plateau=true",
    "privacy.plateau_window=1", "privacy.plateau_tol=0.5",
]  # fmt: skip


def _same_run(cfg, result, sim) -> None:
    assert result.params.tobytes() == sim.params.tobytes()
    got = [r.privacy for r in result.rounds]
    want = [m.privacy for m in sim.rounds]
    assert got == want  # ε, σ, stage, clip norm, server-clip counts, tree step
    assert all(g is not None for g in got)
    assert 0 < got[-1].epsilon_spent <= cfg.privacy.epsilon


@pytest.mark.parametrize("overrides", [ADAPTIVE, FTRL], ids=["adaptive-clip", "dp-ftrl"])
def test_the_runtime_runs_the_simulators_dp_method(overrides):
    cfg = load_config(overrides=overrides)
    sim = run(cfg).simulation
    result, _ = asyncio.run(run_federation(deployment(cfg)))
    _same_run(cfg, result, sim)


def test_adaptive_clip_moves_the_norm_and_the_clients_clip_to_the_ceiling():
    cfg = load_config(overrides=ADAPTIVE)
    dep = deployment(cfg)
    pipe = dep.client_pipeline()
    assert pipe is not None
    (clip,) = [s for s in pipe.stages if isinstance(s, FixedClip)]
    ceiling = CEILING_FACTOR * cfg.privacy.clip_norm
    assert clip.clip_norm == client_clip_norm(cfg.privacy) == ceiling
    (noise,) = [s for s in pipe.stages if isinstance(s, CentralGaussian)]
    assert noise.clip_norm == ceiling
    result, _ = asyncio.run(run_federation(dep))
    norms = [r.privacy.clip_norm for r in result.rounds if r.privacy is not None]
    assert norms[0] == cfg.privacy.clip_norm  # round 0 clips to the initial norm
    assert len(set(norms)) == len(norms)  # the geometric step moved it every round
    assert all(0 < n <= ceiling for n in norms)


def test_dp_ftrl_cohorts_are_the_epoch_orders_blocks():
    cfg = load_config(overrides=FTRL)
    dep = deployment(cfg)
    order = EpochOrder(dep.num_clients, 2, cfg.seed)
    result, _ = asyncio.run(run_federation(dep))
    cohorts = [sorted(r.outcome.accepted) for r in result.rounds]
    assert cohorts == [order.block(r).tolist() for r in range(4)]
    epoch = sorted(c for cohort in cohorts[: order.rounds_per_epoch] for c in cohort)
    assert epoch == list(range(dep.num_clients))  # each client once per tree
    steps = [r.privacy.tree_step for r in result.rounds if r.privacy is not None]
    assert steps == [1, 2, 3, 1]


def test_the_epoch_order_picks_its_block_when_few_clients_are_live():
    """A coordinator never lets a client outside the block in, even when no more than
    ``clients_per_round`` clients are available (the accountant's one-per-tree)."""
    cfg = load_config(overrides=FTRL)
    coordinator = deployment(cfg).center().coordinator
    order = EpochOrder(6, 2, cfg.seed)
    block = order.block(0)
    outside = [c for c in range(6) if c not in block]
    live = np.array([block[0], outside[0]], dtype=np.int64)
    assert coordinator.select(0, live).tolist() == [int(block[0])]


class _Killed(Exception):
    pass


class _DiesOnDownload:
    """A client process that dies once it has the model of a round it drops out of."""

    def __init__(self, link, cid: int, victims: set[tuple[int, int]]) -> None:
        self.link, self.cid, self.victims = link, cid, victims

    def __getattr__(self, name):
        return getattr(self.link, name)

    async def download(self, round_idx, *args, **kwargs):
        got = await self.link.download(round_idx, *args, **kwargs)
        if (round_idx, self.cid) in self.victims:
            self.victims.discard((round_idx, self.cid))
            raise _Killed
        return got


async def _federation_with_deaths(dep, victims: set[tuple[int, int]]):
    """Every client over loopback; a victim dies after its download and restarts (a
    new process, a new session) in time for the next round."""
    n, tokens = dep.num_clients, tokens_for(dep.num_clients)
    center = dep.center(min_available=n)  # each round waits for the restarted ones
    async with CenterServer(center, TokenTable(tokens)) as server:

        async def one(cid: int) -> None:
            while True:
                async with GrpcLink(server.target, cid, tokens[cid]) as link:
                    try:
                        await dep.client(_DiesOnDownload(link, cid, victims), cid).run()  # type: ignore[arg-type]
                        return
                    except _Killed:
                        continue  # restarts
                    except RunEndedError:
                        return  # it restarted after the last round

        async with asyncio.TaskGroup() as tg:
            main = tg.create_task(center.run(dep.initial_params()))
            for cid in range(n):
                tg.create_task(one(cid))
    return main.result()


@pytest.mark.parametrize("overrides", [ADAPTIVE, FTRL], ids=["adaptive-clip", "dp-ftrl"])
def test_a_client_that_dies_is_the_simulators_dropout(overrides):
    """Adaptive clip: the dead client's update is neither decoded nor counted, and the
    count's noise is divided by the same expected cohort q N as in the simulator; DP-FTRL:
    it leaves its block, whose sum is still divided by the block's size. The norms, the
    model and ε equal the simulator's with that client dropping out."""
    rate = 0.3
    sim_cfg = load_config(overrides=[*overrides, f"devices.dropout_rate={rate}"])
    cfg = load_config(overrides=overrides)
    dep = deployment(cfg)
    coordinator = dep.center().coordinator
    victims = {
        (r, c)
        for r in range(cfg.rounds.rounds)
        for c in coordinator.select(r, np.arange(dep.num_clients)).tolist()
        if dropped_out(rate, cfg.seed, r, c) is not None
    }
    assert victims
    assert min(r for r, _ in victims) < cfg.rounds.rounds - 1
    sim = run(sim_cfg).simulation
    result = asyncio.run(asyncio.wait_for(_federation_with_deaths(dep, set(victims)), 120))
    for r, (got, want) in enumerate(zip(result.rounds, sim.rounds, strict=True)):
        dead = sorted(c for rr, c in victims if rr == r)
        assert sorted(c for c, _ in got.outcome.failed) == dead
        assert want.clients_failed == len(dead)
        assert len(got.outcome.accepted) == want.clients_completed
    _same_run(cfg, result, sim)


def test_switch_on_plateau_feeds_the_centers_evaluation_loss():
    cfg = load_config(overrides=PLATEAU)
    sim = run(cfg).simulation
    result, _ = asyncio.run(run_federation(deployment(cfg)))
    _same_run(cfg, result, sim)
    stages = [r.privacy.stage for r in result.rounds if r.privacy is not None]
    plain = load_config(overrides=[*PLATEAU, "privacy.switch_on_plateau=false"])
    no_switch = [m.privacy.stage for m in run(plain).simulation.rounds if m.privacy]
    assert no_switch == [0, 0, 0, 1, 1, 1]
    assert stages == [0, 0, 1, 1, 1, 1]  # the losses of rounds 0-1 plateaued: stage 1 early


def test_switch_on_plateau_without_a_test_set_is_refused():
    cfg = load_config(overrides=PLATEAU)
    dep = deployment(cfg)
    bare = type(dep)(cfg, dep.num_clients, dep.factory, dep.trainer, dep.local_data, None)
    with pytest.raises(ConfigError, match="no test set"):
        bare.center()


@pytest.mark.parametrize(
    ("overrides", "what"),
    [(ADAPTIVE, "adapted clip norm"), (FTRL, "tree position")],
    ids=["adaptive-clip", "dp-ftrl"],
)
def test_a_center_checkpoint_refuses_what_it_does_not_carry(overrides, what):
    dp = deployment(load_config(overrides=overrides)).center().dp
    assert dp is not None
    with pytest.raises(ConfigError, match=what):
        DpPart(dp)


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["privacy.adaptive_clip=true", "secagg.enabled=true"], "secure aggregation"),
        (["privacy.tree_aggregation=true", "secagg.enabled=true"], "secure aggregation"),
        (["privacy.adaptive_clip=true", "privacy.tree_aggregation=true"], "DP-FTRL"),
    ],
    ids=["adaptive-secagg", "ftrl-secagg", "adaptive-ftrl"],
)
def test_pairs_the_simulator_refuses_stay_refused(extra, named):
    with pytest.raises((ConfigError, ValueError), match=named):
        deployment(load_config(overrides=[*DP, *extra]))
