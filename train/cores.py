"""How many cores a rank has and how many DataLoader workers they call for: the one rule behind ``--workers auto``
and the Dataloader profiler rule (torch-free, so the rules load without it)."""

from __future__ import annotations

from byoc_machine import usable_cores

MAX_WORKERS = 16


def core_share(ranks_on_node: int = 1) -> int:
    """Usable cores per rank (``byoc_machine.usable_cores``: affinity and cgroup quota, split between the node's
    ranks)."""
    return max(usable_cores() // max(ranks_on_node, 1), 1)


def auto_workers(cores: int) -> int:
    """Loader workers for ``cores``: every core but one, which the training loop itself keeps (at most 16); no worker
    processes on a single core."""
    return max(min(cores - 1, MAX_WORKERS), 0)
