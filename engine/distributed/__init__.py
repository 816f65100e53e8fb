"""Scale-out: one job split across the workers of a Ray cluster (``synth-engine[ray]``).

``run_on_ray`` partitions the input by item index, runs an ordinary Engine per
partition in a Ray actor, shares each endpoint's rpm/tpm across the fleet with rate
leases, and merges the partitions' manifests. See ``docs/scale-out.md``. Ray itself is
imported only when a run starts.
"""

from __future__ import annotations

from .lease import Grant, LeaseClient, LedgerState, ShareLedger
from .merge import merge_manifests, partition_dir
from .ray_runner import RayRunResult, leased_gates, partition_config, run_on_ray

__all__ = (
    "Grant",
    "LeaseClient",
    "LedgerState",
    "RayRunResult",
    "ShareLedger",
    "leased_gates",
    "merge_manifests",
    "partition_config",
    "partition_dir",
    "run_on_ray",
)
