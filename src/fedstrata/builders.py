"""Builders shared by both drivers: the simulator (:mod:`fedstrata.api`) and the
gRPC runtime (:mod:`fedstrata.runtime`).

Each function turns one configuration section into one component: the dataset of the
built-in data, the clients' training plan, the server optimizer and aggregator
(built-in names or your own by import string, :mod:`fedstrata.strategy`), the seed of
the initial weights, the user's task and the trainer recipe. They sit below both
drivers so that the runtime builds its pipeline without importing the simulator or
its composition root. Torch is imported only by the builders that need it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fedstrata.aggregation import AggregatorSpec, make_aggregator
from fedstrata.aggregation.protocol import Aggregator
from fedstrata.algorithms import ServerOptimizerSpec, make_server_optimizer
from fedstrata.algorithms.server import ServerOptimizer
from fedstrata.config import FedConfig
from fedstrata.config.models import ClientConfig, DataConfig, ServerConfig
from fedstrata.core.context import derive_seed
from fedstrata.core.training import ClientPopulation, LocalPlan, OptimizerKind, TrainerFactory
from fedstrata.core.usercode import describe
from fedstrata.data import FederatedDataset, make_federated
from fedstrata.errors import ConfigError
from fedstrata.strategy import (
    RuleAggregator,
    as_aggregator,
    as_server_optimizer,
    is_import_string,
    resolve_aggregator,
    resolve_server_optimizer,
)

if TYPE_CHECKING:
    from fedstrata.torch_adapter import Task
    from fedstrata.torch_adapter.probe import SgdSettings

__all__ = [
    "ServerStrategy",
    "aggregator",
    "build_dataset",
    "init_seed",
    "local_plan",
    "population",
    "resolve_task",
    "server_optimizer",
    "server_strategy",
    "trainer_factory",
]


def build_dataset(cfg: DataConfig) -> FederatedDataset:
    """The federated dataset named by ``cfg``."""
    return make_federated(
        cfg.name,
        partition=cfg.partition,
        num_clients=cfg.num_clients,
        seed=cfg.seed,
        shards_per_client=cfg.shards_per_client,
        dirichlet_alpha=cfg.dirichlet_alpha,
        quantity_sigma=cfg.quantity_sigma,
        synthetic_alpha=cfg.synthetic_alpha,
        synthetic_beta=cfg.synthetic_beta,
        synthetic_max_samples=cfg.synthetic_max_samples,
        path=cfg.path,
    )


def local_plan(cfg: ClientConfig) -> LocalPlan:
    """The clients' training plan."""
    return LocalPlan(
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        epochs=cfg.epochs,
        steps=cfg.steps,
        optimizer=OptimizerKind(cfg.optimizer),
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        prox_mu=cfg.prox_mu,
    )


def server_optimizer(cfg: ServerConfig, project_dir: Any = None) -> ServerOptimizer[Any]:
    """The server optimizer named by ``cfg``: built-in (Reddi et al. 2021) or your own.

    ``server.optimizer: my_mod:MyOpt`` imports your class from ``project_dir`` (see
    :func:`fedstrata.strategy.resolve_server_optimizer`).

    Raises:
        ConfigError: a hyperparameter out of range.
        TaskError: your optimizer cannot be imported or built.
    """
    if is_import_string(cfg.optimizer):
        return resolve_server_optimizer(cfg.optimizer, project_dir)
    return make_server_optimizer(
        ServerOptimizerSpec(
            name=cfg.optimizer,  # type: ignore[arg-type]  # checked by ServerConfig
            lr=cfg.lr,
            momentum=cfg.momentum,
            beta1=cfg.beta1,
            beta2=cfg.beta2,
            tau=cfg.tau,
        )
    )


def aggregator(cfg: ServerConfig, project_dir: Any = None) -> Aggregator[Any]:
    """The aggregator named by ``cfg``: built-in or your own (``my_mod:MyAgg``).

    Raises:
        ConfigError: a hyperparameter out of range.
        TaskError: your aggregator cannot be imported or built.
    """
    if is_import_string(cfg.aggregator):
        return resolve_aggregator(cfg.aggregator, project_dir)
    return make_aggregator(
        AggregatorSpec(
            name=cfg.aggregator,  # type: ignore[arg-type]  # checked by ServerConfig
            trim_fraction=cfg.trim_fraction,
            krum_byzantine=cfg.krum_byzantine,
        )
    )


def init_seed(config: FedConfig) -> int:
    """Seed of the initial weights: ``model.init_seed``, else derived from the run seed."""
    if config.model.init_seed is not None:
        return config.model.init_seed
    return derive_seed(config.seed, 0, -1, "init")


def resolve_task(config: FedConfig, task: Task | str | None = None) -> Task | None:
    """The task to run: ``task`` (an object or an import string), else ``config.task``.

    Raises:
        TaskError: the task's module does not import or does not hold a Task.
    """
    spec = task if task is not None else config.task
    if spec is None:
        return None
    from fedstrata.torch_adapter import Task  # deferred: torch
    from fedstrata.torch_adapter import resolve_task as resolve

    return spec if isinstance(spec, Task) else resolve(spec, config.project_dir)


def population(config: FedConfig, task: Task | None) -> ClientPopulation:
    """The task's own clients when it has ``client_data``, else the config's data."""
    if task is not None and task.client_data is not None:
        from fedstrata.torch_adapter import TaskPopulation

        return TaskPopulation(task)
    return build_dataset(config.data)


def trainer_factory(
    config: FedConfig,
    dataset: ClientPopulation | None,
    task: Task | None = None,
    sgd: SgdSettings | None = None,
) -> TrainerFactory:
    """The torch trainer recipe: ``task``'s model, else the config's built-in model.

    The built-in models are tasks too (:func:`fedstrata.torch_adapter.builtin_task`);
    their recipe also carries the data's input shape and classes, which are checked.
    ``dataset``: the clients, whose first example counts the model's FLOPs (None: a
    deployment's center, which holds no data). ``sgd``: the task's optimizer is this
    plain SGD (the fast path trains it). Imports torch.
    """
    from fedstrata.torch_adapter import FirstExample, TaskTrainerFactory, TorchTrainerFactory

    if task is not None:
        example = None if dataset is None else FirstExample(dataset)
        return TaskTrainerFactory(
            task, shuffle_seeding=config.client.shuffle, example=example, sgd=sgd,
            precision=config.client.precision,
        )  # fmt: skip
    if not isinstance(dataset, FederatedDataset):
        raise ConfigError("a population of a task's own data needs the task's model")
    return TorchTrainerFactory(
        model=config.model.kind,
        input_shape=dataset.input_shape,
        num_classes=dataset.num_classes,
        hidden=config.model.hidden,
        shuffle_seeding=config.client.shuffle,
        precision=config.client.precision,
    )


@dataclass(frozen=True, eq=False)
class ServerStrategy:
    """The server's optimizer and aggregator for one run.

    Attributes:
        optimizer: applies the round's aggregate to the global model.
        aggregator: combines the round's updates.
        custom_aggregator: the aggregator is the user's own (not a built-in name).
    """

    optimizer: ServerOptimizer[Any]
    aggregator: Aggregator[Any]
    custom_aggregator: bool


def server_strategy(
    config: FedConfig, *, optimizer: object = None, aggregation: object = None
) -> ServerStrategy:
    """The run's server strategy: ``optimizer`` / ``aggregation`` when given (your
    objects, classes or import strings), else the config's ``server`` section.

    Raises:
        ConfigError: your aggregator where it cannot run (secure aggregation or
            central DP).
        TaskError: your object cannot be imported or built, or lacks the protocol.
    """
    root = config.project_dir
    if optimizer is None:
        opt = server_optimizer(config.server, root)
    elif isinstance(optimizer, str):
        opt = resolve_server_optimizer(optimizer, root)
    else:
        opt = as_server_optimizer(optimizer)
    custom = aggregation is not None or is_import_string(config.server.aggregator)
    if aggregation is None:
        agg = aggregator(config.server, root)
    elif isinstance(aggregation, str):
        agg = resolve_aggregator(aggregation, root)
    else:
        agg = as_aggregator(aggregation)
    if custom:
        check_custom_aggregator(config, agg)
    return ServerStrategy(opt, agg, custom)


def check_custom_aggregator(config: FedConfig, agg: Aggregator[Any]) -> None:
    """Refuse your aggregator where it cannot run.

    Secure aggregation reveals only the masked sum, so it needs the weighted mean;
    central DP calibrates its noise to the mean of clipped updates. (Asynchronous
    FedBuff runs it over each server step's buffered updates; a hierarchy runs it at
    the center over the edges' or regions' partial means.)

    Raises:
        ConfigError: the feature that rules it out, and why.
    """
    name = describe(agg.rule) if isinstance(agg, RuleAggregator) else describe(agg)
    reasons = {
        "secagg.enabled=true (the server sees only the masked sum: the mean)": (
            config.secagg.enabled
        ),
        f"privacy.mechanism={config.privacy.mechanism} (its noise is calibrated to the mean "
        "of clipped updates)": (config.privacy.enabled),
    }
    for what, clash in reasons.items():
        if clash:
            raise ConfigError(f"your aggregator {name} cannot run with {what}")
