"""fedstrata: fast, private, hierarchical federated learning.

The public API is re-exported here; see ``docs/`` for guides.
"""

from fedstrata.errors import FedstrataError

__version__ = "0.1.0"

__all__ = ["FedstrataError", "__version__"]
