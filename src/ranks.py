"""Which share of the work this process does: its rank among the processes of one launch.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK (one process per GPU, on every node); SLURM's srun
sets SLURM_PROCID, SLURM_NTASKS and SLURM_LOCALID; a plain `python` run is rank 0 of 1. C1 needs
nothing more to split its partitions (no process group, no collective: a rank that dies leaves
no one waiting), so the same code runs under torchrun, srun, or any engine that sets the
variables (Ray, Spark: see README "Beyond one machine").
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from src.errors import SuiteError

if TYPE_CHECKING:
    import torch

# (rank, world size, rank on this node, processes on this node): torchrun's names, then SLURM's
SOURCES = (
    ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"),
    ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE"),
)


@dataclass(frozen=True)
class Rank:
    """This process is `rank` of `world`; `local` is its rank on its node (which GPU it takes),
    `local_world` the number of processes on its node (how many CPUs its loader may take)."""

    rank: int = 0
    world: int = 1
    local: int = 0
    local_world: int = 1


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SuiteError(f"{name}={raw!r} is not a whole number; unset it or fix it") from None


def this_rank(env: Mapping[str, str] | None = None) -> Rank:
    """The rank of this process from torchrun's or SLURM's variables (neither: rank 0 of 1)."""
    env = os.environ if env is None else env
    for rank_var, world_var, local_var, local_world_var in SOURCES:
        if world_var in env:
            world = _int(env, world_var, 1)
            rank = _int(env, rank_var, 0)
            if world < 1 or not 0 <= rank < world:
                raise SuiteError(
                    f"{rank_var}={rank} with {world_var}={world}: a rank must lie in "
                    f"0 … {world_var} − 1; launch with torchrun or srun, or unset both"
                )
            # SLURM writes e.g. "4(x2)" for 4 tasks on each of 2 nodes: the leading count
            per_node = re.match(r"\d+", env.get(local_world_var, "")) or None
            return Rank(rank, world, _int(env, local_var, 0), int(per_node[0]) if per_node else 1)
    return Rank()


def rank_device(device: torch.device, rank: Rank, visible: int) -> torch.device:
    """The device of this rank: a CUDA device named without an index, in a launch of several
    processes, becomes the local rank's GPU of the `visible` ones — cuda:<local rank> when the
    process sees all of its node's GPUs (torchrun), cuda:0 when it sees only its own (srun with
    --gpus-per-task=1)."""
    if device.type == "cuda" and device.index is None and rank.world > 1 and visible > 0:
        return type(device)("cuda", rank.local % visible)
    return device
