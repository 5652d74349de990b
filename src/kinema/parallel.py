"""The one place that makes a model parallel, memory-light or compiled; model code stays unchanged.

    dist = setup_distributed()                      # torchrun's env; gloo on CPU, nccl on GPU
    model = parallelize(model, fsdp=dist.world_size > 1, checkpoint=True, compile=False)
    ...
    cleanup()

Per block (the model's `blocks` ModuleList, or any modules passed as `blocks`), in this order:
torch.compile of its forward (eager if compiling fails), activation checkpointing around that, and
FSDP2 `fully_shard` outside both; then `fully_shard` of the root for what the blocks leave. Wrapping is
done by replacing the block instance's `forward`, so parameter names and state dicts do not change.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor, distribute_tensor
from torch.utils.checkpoint import checkpoint as _checkpoint

from kinema.accel import maybe_compile
from kinema.errors import KinemaError


@dataclass(frozen=True)
class Dist:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


ONE_CPU = Dist(0, 1, 0, torch.device("cpu"))  # a single process on the CPU


def setup_distributed(backend: str | None = None, cuda: bool | None = None) -> Dist:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT).

    Without those variables this is one process and no group is created. On GPU (`cuda`; default: when torch
    sees one) each process takes the GPU numbered LOCAL_RANK, else the ranks meet over gloo on the CPUs.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() if cuda is None else cuda
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise KinemaError(f"WORLD_SIZE={world} but {', '.join(missing)} is not set; launch with torchrun")
        dist.init_process_group(backend or ("nccl" if cuda else "gloo"), rank=rank, world_size=world)
    return Dist(rank, world, local, device)


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def parallelize(model: nn.Module, *, fsdp: bool = False, checkpoint: bool = False, compile: bool = False,
                compile_options: dict | None = None, blocks: Iterable[nn.Module] | None = None, mesh=None,
                mp_policy: torch.distributed.fsdp.MixedPrecisionPolicy | None = None) -> nn.Module:
    """Apply compile / activation checkpointing / FSDP2 to `model`'s blocks (and FSDP2 to its root).

    `compile_options` go to torch.compile (e.g. {"mode": "max-autotune"}); `mesh` and `mp_policy` to
    fully_shard (default: all ranks, parameters in their own dtype). Returns `model` itself, changed in
    place; with fsdp its parameters become sharded DTensors.
    """
    blocks = list(_blocks(model) if blocks is None else blocks)
    for block in blocks:
        if checkpoint:
            block.forward = _checkpointed(block.forward)
        if compile:  # around the checkpoint: compiled inside it, recomputation's early stop would read as a failure
            block.forward = maybe_compile(block.forward, **(compile_options or {}))
    if fsdp:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        if mesh is None and not dist.is_initialized():
            raise KinemaError("FSDP shards a model over the ranks of a process group, and there is none; launch "
                              "with torchrun (kinema.parallel.setup_distributed joins its group)")

        policy = mp_policy or MixedPrecisionPolicy()
        for block in blocks:
            fully_shard(block, mesh=mesh, mp_policy=policy)
        fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


# ---------------------------------------------------------------------------------------------
# Training state across ranks: checkpoints hold full tensors, so N processes save and M resume
# ---------------------------------------------------------------------------------------------

def gather_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Full, unsharded CPU state dicts of `model` and its optimizer (optimizer state keyed by parameter
    name). Collective under FSDP2: every rank calls it, each gets the whole state."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    return get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def scatter_state(model: nn.Module, optimizer: torch.optim.Optimizer, model_state: dict, optim_state: dict) -> None:
    """Load full state dicts (as `gather_state` made them) into a model that may be sharded."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=optim_state,
                   options=StateDictOptions(full_state_dict=True))


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """A DTensor gathered from all ranks (collective); a plain tensor as it is."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def full_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: full_tensor(t).cpu() for name, t in tensors.items()}


def shard_like(model: nn.Module, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Full tensors laid out like `model`'s parameters of the same names: sharded where FSDP2 shards them."""
    params = dict(model.named_parameters())
    out = {}
    for name, tensor in tensors.items():
        param = params[name]
        tensor = tensor.to(param.device)
        out[name] = (distribute_tensor(tensor, param.device_mesh, param.placements)
                     if isinstance(param, DTensor) else tensor)
    return out


def mean_over_ranks(value: float) -> float:
    if not dist.is_initialized():
        return value
    total = torch.tensor([value], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(total)
    return float(total.item()) / dist.get_world_size()


def any_rank(flag: bool) -> bool:
    """`flag` on any rank, for every rank (e.g. a Ctrl-C seen by one process): all must stop at the same
    step, or the ones still training would wait forever in a collective for the ones that stopped."""
    if not dist.is_initialized():
        return flag
    value = torch.tensor([float(flag)], device=_collective_device())
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _collective_device() -> torch.device:
    """NCCL reduces only GPU tensors; gloo takes CPU ones."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def _checkpointed(forward):
    @functools.wraps(forward)
    def run(*args, **kwargs):
        if not torch.is_grad_enabled():  # inference: nothing to save, nothing to recompute
            return forward(*args, **kwargs)
        return _checkpoint(forward, *args, use_reentrant=False, **kwargs)

    return run


def _blocks(model: nn.Module) -> nn.ModuleList:
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.ModuleList):
        raise KinemaError(f"{type(model).__name__} has no `blocks` ModuleList; pass blocks= to parallelize")
    return blocks
