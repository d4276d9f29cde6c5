"""FSDP2 (`torch.distributed.fsdp.fully_shard`) for a base that does not fit one device beside its
activations (`distributed.fsdp: true`).

Every decoder layer is one FSDP unit: its frozen base weights and both adapters' LoRA weights are
split over the ranks, gathered layer by layer for the update's forward and backward, and the LoRA
gradients are reduce-scattered (summed: the token weights already divide by the whole step's turns,
as in data parallel). The embedding, final norm and LM head stay whole on every rank: the fused loss
reads the head weight directly, and small bases tie it to the embedding.

Rollouts and evaluation run with every layer gathered (`gathered`): ranks then play different numbers
of forwards (their users' episodes end at different turns) with no collective between them. The
update must run the same micro-batches on every rank (the gather of layer k is a collective), so a
rank with fewer pads with zero-weight ones (`train.step`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from coars_fast.distributed import World


def decoder_layers(model) -> Sequence[torch.nn.Module]:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.model.layers


def shard_layers(model, world: World) -> list:
    """Shard every decoder layer of `model` (a PeftModel or a plain causal LM) over the world's ranks,
    in place. Returns the FSDP units, for `gathered`. Parameters are replaced by sharded ones:
    collect the optimizer's parameters after this."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    device = next(model.parameters()).device
    mesh = init_device_mesh(device.type, (world.size,))
    units = []
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh, reshard_after_forward=True)
        # a plain sum over ranks, as data parallel's all-reduce (gloo has no pre-multiplied sum)
        layer.set_gradient_divide_factor(1.0)
        layer.set_force_sum_reduction_for_comms(True)
        units.append(layer)
    return units


@contextmanager
def gathered(units: Sequence) -> Iterator[None]:
    """Every unit's whole weights on every rank for the duration (an all-gather per unit on entry,
    no collective inside, the whole copies freed on exit): rollouts and evaluation. Units are
    resharded on the way out whatever raised, the flag first (a forward cut short by an error
    would otherwise keep its layer whole)."""
    entered = []
    try:
        for unit in units:
            unit.set_reshard_after_forward(False)
            entered.append(unit)
            unit.unshard()
        yield
    finally:
        for unit in entered:
            unit.set_reshard_after_forward(True)
            unit.reshard()


def is_sharded(tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def whole(tensor: torch.Tensor) -> torch.Tensor:
    """A sharded tensor's full value (a collective: every rank calls it), a plain one as it is."""
    return tensor.full_tensor() if is_sharded(tensor) else tensor


def local(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's part of a sharded tensor, a plain one as it is."""
    return tensor.to_local() if is_sharded(tensor) else tensor


def full_optimizer_state(optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's state dict with every sharded state tensor gathered whole (a collective): the
    same layout one process writes, so that a run resumes with any world size, sharded or not."""
    state = optimizer.state_dict()
    state["state"] = {
        index: {key: whole(value) if torch.is_tensor(value) else value for key, value in entry.items()}
        for index, entry in state["state"].items()
    }
    return state


def shard_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """After `load_state_dict` of a whole state into an optimizer over sharded parameters: every
    state tensor shaped like its parameter becomes this rank's shard of it (no communication: every
    rank read the same whole tensor)."""
    from torch.distributed.tensor import distribute_tensor

    for param, entry in optimizer.state.items():
        if not is_sharded(param):
            continue
        for key, value in entry.items():
            if torch.is_tensor(value) and not is_sharded(value) and value.shape == param.shape:
                entry[key] = distribute_tensor(value, param.device_mesh, param.placements, src_data_rank=None)
