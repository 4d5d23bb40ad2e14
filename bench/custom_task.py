"""Issue 14: W1 as a user task vs the built-in preset, and a custom-loop task.

W1 (../shared/BASELINES.md) three ways, each a fresh process timed whole
(interpreter start, imports, data, 10 rounds), interleaved repeats:

* ``builtin``: the ``w1`` preset (built-in MLP, fedstrata's flat in-place SGD);
* ``task``: ``bench/tasks/w1_task.py:w1``, the same MLP as a plain ``nn.Module``, the
  user's own data loading, a standard ``torch.optim.SGD`` (``Task.optimizer``);
* ``task_custom_loop``: ``w1_custom_loop``, the same with the user's training loop.

All three run the preset's config (``client.shuffle: round_client``, ``init_seed 0``),
so the arithmetic is W1's and accuracies must agree after every round. Must show:
``ratio_task_vs_builtin <= 1.15`` and ``ratio_custom_loop_vs_builtin <= 1.5``.
``rounds_s_*`` is the FL rounds alone (sum of the rounds' wall time).

Where the time goes (2-core machine, phase timestamps inside one process each,
2026-12-07): all three spend about 0.35 s starting Python and importing fedstrata,
1.0 s importing torch, 0.04 s on the rest of the set-up (probe, model, run store,
worker) and 0.33 s on the 10 rounds (the custom loop about 0.5 s: the user's own
loop, with ``clip_grad_norm_`` every step, on ``FlatSGD``); a plain
``torch.optim.SGD`` task trains on the same flat fast path as the preset. The
difference is the user's data code: the task's ``client_data`` imports scikit-learn
(0.85-0.95 s) in the main process, and it can only run once the task module, which
imports torch, is imported; the preset builds its dataset in a forked child while
the main process imports torch, so there the two imports overlap. Measured at load
about 1: builtin 2.15 and 2.31 s, task 3.08 and 3.15 s (1.37-1.46x), 0.89-0.97 s of
it the task's data. The 1.15x target is out of reach while a task's data function
needs an import as slow as torch's: no process can call it before paying for torch
(a child forked before the torch import would have to import the task module, and
torch, itself). Loading the task's data in a forked child after the torch import
would overlap it only with the ~20 ms of set-up that needs no data (prototyped:
0.89-1.77 s inline against 0.98-2.04 s forked, no gain beyond the noise). On a
loaded machine the preset's overlap buys less (the second core is busy anyway) and
the ratio falls (1.18x at load 2-3).

The optimizer probe (``torch_adapter/probe.py``) builds the user's optimizer with
``torch.optim``'s methods kept from importing ``torch._dynamo``: about 10 ms, in the
main process, and no process of any of the three runs imports ``torch._dynamo``.
Before, a forked child probed it, importing ``torch._dynamo`` (about 1 s of CPU that
competed with the main process), and the main process waited for it (0.16 s on an
idle machine: task 2.72 s against builtin 1.76 s then).

Results (2026-12-07, 2-core machine shared with other jobs, load 1.1-2.2, 3
interleaved repeats; this code, then the code before the inline probe):
builtin 3.65 s, task 5.05 s (1.39x), task_custom_loop 4.77 s (1.31x), against
builtin 3.72 s, task 5.92 s (1.59x), task_custom_loop 5.19 s (1.40x) before;
accuracy 0.3972 in all three, equal after every round. The 1.15x target for the task
is not met on whole-process time; see above for why.

Usage: python bench/custom_task.py [--quick] [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TASKS = {"builtin": None, "task": "w1_task:w1", "task_custom_loop": "w1_task:w1_custom_loop"}


def child(role: str, rounds: int) -> None:
    """One W1 run through fedstrata's API (run store on, no report)."""
    from fedstrata.api import run
    from fedstrata.config import load_config

    overrides = [f"rounds.rounds={rounds}", "output.report=false", "output.progress=false",
                 "output.dir=/tmp/fedstrata-bench-runs"]  # fmt: skip
    task = TASKS[role]
    if task is not None:
        overrides += [f"task={task}", f"project_dir={HERE / 'tasks'}"]
    result = run(load_config(preset="w1", overrides=overrides))
    sim = result.simulation
    rounds_s = sum(m.wall_round_s for m in sim.rounds)
    accs = [m.accuracy for m in sim.rounds]
    print(json.dumps({"accs": accs, "workers": result.workers, "rounds_s": rounds_s}))


def main() -> None:
    from _common import emit, median, run_child

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat (< 1 minute)")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.quick else 3)
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    runs: dict[str, list] = {role: [] for role in TASKS}
    for _ in range(repeats):  # interleaved, so drift on a shared machine hits all three
        for role in TASKS:
            runs[role].append(run_child([__file__, "--role", role, "--rounds", "10"], env))
    wall = {role: median([r.wall_s for r in rs]) for role, rs in runs.items()}
    fl = {role: median([r.result["rounds_s"] for r in rs]) for role, rs in runs.items()}
    accs = {role: rs[0].result["accs"] for role, rs in runs.items()}
    rows = [["run", "whole s", "final acc"]]
    rows += [[role, f"{wall[role]:.2f}", f"{accs[role][-1]:.4f}"] for role in TASKS]
    emit(
        rows,
        {
            "bench": "custom_task",
            "builtin_s": round(wall["builtin"], 3),
            "task_s": round(wall["task"], 3),
            "task_custom_loop_s": round(wall["task_custom_loop"], 3),
            "ratio_task_vs_builtin": round(wall["task"] / wall["builtin"], 3),
            "ratio_custom_loop_vs_builtin": round(wall["task_custom_loop"] / wall["builtin"], 3),
            "rounds_s_builtin": round(fl["builtin"], 3),
            "rounds_s_task": round(fl["task"], 3),
            "rounds_s_task_custom_loop": round(fl["task_custom_loop"], 3),
            "acc_builtin": accs["builtin"][-1],
            "acc_task": accs["task"][-1],
            "acc_task_custom_loop": accs["task_custom_loop"][-1],
            "acc_equal_every_round": accs["task"] == accs["builtin"] == accs["task_custom_loop"],
            "workers": runs["task"][0].result["workers"],
            "repeats": repeats,
        },
    )


if __name__ == "__main__":
    if "--role" in sys.argv:
        p = argparse.ArgumentParser()
        p.add_argument("--role", choices=list(TASKS))
        p.add_argument("--rounds", type=int, default=10)
        a = p.parse_args()
        child(a.role, a.rounds)
    else:
        main()
