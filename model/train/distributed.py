"""Processes, devices and randomness: the process group `torchrun` describes (`Distributed`), the
device a run uses, and the seeding and RNG state that make a resumed run continue exactly."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from labeling.core.errors import InputError


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {name}: CUDA is not available on this machine")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise InputError(f"--device {name!r}: use auto, cpu, cuda or cuda:N")
    return torch.device(name if name != "cuda" else f"cuda:{local_rank}")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every RNG's state, in types `torch.load(weights_only=True)` accepts."""
    legacy = np.random.get_state()
    assert isinstance(legacy, tuple)  # the legacy tuple form: (kind, keys, position, has_gauss, gauss)
    kind, keys, position, has_gauss, gauss = legacy
    python_version, python_state, python_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {"version": python_version, "state": list(python_state), "gauss": python_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["position"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


@dataclass
class Distributed:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    owns_group: bool = False  # this call initialised the process group (and so tears it down)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device_name: str) -> Distributed:
        """The process group `torchrun` describes in the environment (WORLD_SIZE, RANK, LOCAL_RANK,
        MASTER_ADDR, MASTER_PORT); one process when there is none."""
        import torch.distributed as dist

        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        owns = False
        if not dist.is_initialized():
            cuda = device_name != "cpu" and torch.cuda.is_available()
            if cuda:
                torch.cuda.set_device(local_rank)
            dist.init_process_group(backend="nccl" if cuda else "gloo")
            owns = True
        return cls(dist.get_world_size(), dist.get_rank(), local_rank, owns)

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def broadcast_flag(self, value: bool, device: torch.device) -> bool:
        """Rank 0's value, on every rank."""
        if not self.enabled:
            return value
        import torch.distributed as dist

        flag = torch.tensor([1 if value else 0], device=device)
        dist.broadcast(flag, src=0)
        return bool(flag.item())

    def close(self) -> None:
        if self.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()
