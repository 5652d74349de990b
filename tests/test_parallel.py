"""Parallel wrappers change memory and placement, never the maths: same loss, same gradients."""

import copy
import gc
import os
import socket
import warnings

import pytest
import torch
import torch.multiprocessing as mp

from kinema import parallel
from kinema.config import preset
from kinema.errors import KinemaError
from kinema.models.dit import DiT


def _model(seed=0):
    torch.manual_seed(seed)
    model = DiT(preset("debug").dit)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)  # adaLN-zero would leave most gradients zero
    return model


def _batch(n=4):
    gen = torch.Generator().manual_seed(1)
    return (torch.randn(n, 8, 2, 4, 4, generator=gen), torch.rand(n, 2, generator=gen),
            torch.randn(n, 6, 384, generator=gen), torch.randn(n, 8, 2, 4, 4, generator=gen))


def _loss(model, x, t, ctx, target):
    return (model(x, t, ctx) - target).pow(2).mean()


def _grads(model):
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def test_checkpointing_gives_identical_gradients_and_state_dict():
    plain = _model()
    wrapped = parallel.parallelize(copy.deepcopy(plain), checkpoint=True)
    assert wrapped.state_dict().keys() == plain.state_dict().keys()
    batch = _batch()
    _loss(plain, *batch).backward()
    _loss(wrapped, *batch).backward()
    for name, grad in _grads(plain).items():
        torch.testing.assert_close(_grads(wrapped)[name], grad, rtol=0, atol=0, msg=name)


def test_checkpointing_recomputes_in_backward():
    model = parallel.parallelize(_model(), checkpoint=True)
    calls = []
    model.blocks[0].self_attn.register_forward_hook(lambda *args: calls.append(1))
    loss = _loss(model, *_batch())
    assert len(calls) == 1
    loss.backward()
    assert len(calls) == 2  # the block ran again to rebuild its activations


def test_compile_wrapper_keeps_results():
    torch._dynamo.reset()
    plain = _model()
    model = parallel.parallelize(copy.deepcopy(plain), compile=True, checkpoint=True,
                                 compile_options={"backend": "aot_eager"})  # inductor takes minutes here
    x, t, ctx, _ = _batch(2)
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, ctx), plain(x, t, ctx), rtol=1e-4, atol=1e-5)
    with warnings.catch_warnings(record=True) as caught:  # training: compiled, and recomputed in backward
        warnings.simplefilter("always")
        model(x, t, ctx).square().mean().backward()
    plain(x, t, ctx).square().mean().backward()
    assert not [w for w in caught if "torch.compile failed" in str(w.message)]
    for (name, mine), theirs in zip(model.named_parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(mine.grad, theirs.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_fsdp_without_a_process_group_says_to_use_torchrun():
    with pytest.raises(KinemaError, match="launch with torchrun"):
        parallel.parallelize(_model(), fsdp=True)


def test_parallelize_needs_blocks():
    with pytest.raises(KinemaError, match="blocks"):
        parallel.parallelize(torch.nn.Linear(2, 2), checkpoint=True)


def test_setup_distributed_without_torchrun_is_one_process(monkeypatch):
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    info = parallel.setup_distributed()
    assert (info.rank, info.world_size, info.is_main) == (0, 1, True)
    assert not torch.distributed.is_initialized()


def _fsdp_worker(rank: int, port: int) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    info = parallel.setup_distributed()
    try:
        _check_fsdp_gradients(info.rank)
        # Gloo aborts the process if its groups die while a peer or a pending work object still uses
        # them: the FSDP state died with the function above; wait for the peer before tearing down.
        gc.collect()
        torch.distributed.barrier()
    finally:
        parallel.cleanup()


def _check_fsdp_gradients(rank: int) -> None:
    reference = _model()
    full = _batch()
    ref_loss = _loss(reference, *full)
    ref_loss.backward()
    model = parallel.parallelize(_model(), fsdp=True, checkpoint=True)
    assert type(next(model.parameters())).__name__ == "DTensor"
    half = [b[2 * rank: 2 * rank + 2] for b in full]  # each rank takes half of the batch
    loss = _loss(model, *half)
    loss.backward()  # FSDP2 averages gradients over ranks: the full batch's mean-loss gradient
    mean_loss = loss.detach().clone()
    torch.distributed.all_reduce(mean_loss)
    torch.testing.assert_close(mean_loss / 2, ref_loss.detach(), rtol=1e-6, atol=1e-7)
    for (name, p), ref in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p.grad.full_tensor(), ref.grad, rtol=1e-5, atol=1e-7, msg=name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fsdp2_over_gloo_matches_one_process():
    mp.spawn(_fsdp_worker, args=(_free_port(),), nprocs=2, join=True)
