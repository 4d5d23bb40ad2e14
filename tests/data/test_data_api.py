"""Public surface of fedstrata.data, and the no-torch rule."""

from __future__ import annotations

import subprocess
import sys

from fedstrata import data

EXPECTED = {
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
}


def test_all_lists_the_public_api() -> None:
    assert set(data.__all__) == EXPECTED
    for name in data.__all__:
        assert getattr(data, name) is not None


def test_importing_data_does_not_import_torch() -> None:
    code = "import sys, fedstrata.data; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
