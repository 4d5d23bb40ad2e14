"""Client data: partitions, federated datasets, built-in and user-supplied datasets.

NumPy and scikit-learn only (no torch). A :class:`FederatedDataset` holds one base
training set and per-client index ranges into it, so memory stays O(data) for any
number of clients.
"""

from fedstrata.data.builtin import (
    DatasetName,
    PartitionName,
    load_digits_split,
    make_federated,
    synthetic,
)
from fedstrata.data.federated import FederatedDataset, client_test_split, holdout_split
from fedstrata.data.folder import load_npz_folder
from fedstrata.data.partition import (
    dirichlet_label_skew,
    iid,
    label_shards,
    quantity_skew,
)

__all__ = [
    "DatasetName",
    "FederatedDataset",
    "PartitionName",
    "client_test_split",
    "dirichlet_label_skew",
    "holdout_split",
    "iid",
    "label_shards",
    "load_digits_split",
    "load_npz_folder",
    "make_federated",
    "quantity_skew",
    "synthetic",
]
