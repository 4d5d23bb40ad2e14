"""The optimizer probe does not import torch._dynamo, and leaves torch as it found it.

Whether a process has imported ``torch._dynamo`` is global state, so each check
runs in a fresh interpreter.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from fedstrata.torch_adapter.probe import skip_dynamo_import

SETUP = """
import json, sys
import torch
from torch import nn
from fedstrata.errors import TaskError
from fedstrata.torch_adapter import Task
from fedstrata.torch_adapter.probe import plain_sgd

def model():
    return nn.Sequential(nn.Linear(4, 3))

WRAPPED = ("add_param_group", "zero_grad", "state_dict", "load_state_dict")

def cached():  # whether torch._disable_dynamo's wrappers have the raw methods cached
    raws = [getattr(torch.optim.Optimizer, name).__wrapped__ for name in WRAPPED]
    return [getattr(raw, "__dynamo_disable", None) is raw for raw in raws]

def broken(params):
    raise RuntimeError("no optimizer today")

out = {}
"""


def run_fresh(code: str) -> dict[str, object]:
    """Run SETUP + ``code`` in a new interpreter; return the ``out`` it prints as JSON."""
    script = SETUP + textwrap.dedent(code) + "\nprint(json.dumps(out))\n"
    argv = [sys.executable, "-c", script]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_probe_does_not_import_dynamo_and_restores_the_optimizer_methods() -> None:
    out = run_fresh("""
        sgd = Task(model=model, optimizer=lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.5))
        out["settings"] = repr(plain_sgd(sgd))
        try:
            plain_sgd(Task(model=model, optimizer=broken))
        except TaskError as exc:
            out["error"] = str(exc)
        out["dynamo_after_probe"] = "torch._dynamo" in sys.modules
        out["raw_cached_after_probe"] = any(cached())
        opt = torch.optim.SGD(model().parameters(), lr=0.1)  # as a user's own code would
        opt.zero_grad()
        out["dynamo_after_optimizer"] = "torch._dynamo" in sys.modules
        out["raw_cached_after_optimizer"] = any(cached())
        f = torch.compile(lambda x: torch.relu(x) * 2, backend="eager")
        out["compiled"] = f(torch.tensor([-1.0, 3.0])).tolist()
    """)
    assert out["settings"] == "SgdSettings(lr=0.1, momentum=0.5, weight_decay=0.0)"
    assert "no optimizer today" in str(out["error"])
    assert out["dynamo_after_probe"] is False
    assert out["raw_cached_after_probe"] is False
    assert out["dynamo_after_optimizer"] is True  # later optimizers behave as without the probe
    assert out["raw_cached_after_optimizer"] is False
    assert out["compiled"] == [0.0, 6.0]


def test_probe_works_where_torch_lacks_the_disable_dynamo_helper() -> None:
    out = run_fresh("""
        del torch._compile._disable_dynamo
        from fedstrata.torch_adapter.probe import skip_dynamo_import
        with skip_dynamo_import() as changed:
            out["changed"] = changed
        sgd = Task(model=model, optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
        out["settings"] = repr(plain_sgd(sgd))
    """)
    assert out["changed"] is False
    assert out["settings"] == "SgdSettings(lr=0.1, momentum=0.0, weight_decay=0.0)"


def test_skip_dynamo_import_changes_nothing_once_dynamo_is_imported() -> None:
    import torch._dynamo

    zero_grad = torch.optim.Optimizer.zero_grad.__wrapped__  # type: ignore[attr-defined]
    before = getattr(zero_grad, "__dynamo_disable", None)
    with skip_dynamo_import() as changed:
        assert not changed
        assert getattr(zero_grad, "__dynamo_disable", None) is before


def test_skip_dynamo_import_caches_the_raw_methods_only_inside_the_block() -> None:
    out = run_fresh("""
        from fedstrata.torch_adapter.probe import skip_dynamo_import
        with skip_dynamo_import() as changed:
            out["changed"] = changed
            out["inside"] = cached()
            opt = torch.optim.SGD(model().parameters(), lr=0.1)
            opt.zero_grad()
            opt.load_state_dict(opt.state_dict())
        out["outside"] = cached()
        out["dynamo"] = "torch._dynamo" in sys.modules
    """)
    assert out["changed"] is True
    assert out["inside"] == [True] * 4
    assert out["outside"] == [False] * 4
    assert out["dynamo"] is False
