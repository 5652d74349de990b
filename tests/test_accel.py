"""Speed-ups that must not change results: step cache, guarded compile, threads, prepared text context."""

import warnings

import pytest
import torch

from kinema import accel, sampling
from kinema.config import preset
from kinema.errors import KinemaError
from kinema.models.dit import DiT


class CountingField:
    """A velocity field v = -x (straight paths to 0) that counts its evaluations."""

    def __init__(self):
        self.evaluations = 0

    def __call__(self, x, t):
        self.evaluations += 1
        return -x


def _sample(model_fn, steps=20):
    x = torch.randn(1, 4, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    return sampling.sample(model_fn, x, sampling.schedule(steps, shift=1.5))


def test_step_cache_skips_and_stays_close():
    exact_field, cached_field = CountingField(), CountingField()
    exact = _sample(exact_field)
    cache = accel.step_cache(cached_field, threshold=0.3)
    approx = _sample(cache)
    assert cache.calls == 20 and cache.skipped == 20 - cached_field.evaluations
    assert 0 < cache.skipped <= 20 * 2 // 3  # never more than max_skips=2 in a row
    assert (approx - exact).abs().max() < 0.2 * exact.abs().max() + 0.05


@pytest.mark.parametrize("kwargs", [dict(threshold=0.0), dict(threshold=10.0, enabled=False),
                                    dict(threshold=10.0, max_skips=0)])
def test_step_cache_off_is_exact(kwargs):
    field = CountingField()
    cache = accel.step_cache(field, **kwargs)
    torch.testing.assert_close(_sample(cache), _sample(CountingField()), rtol=0, atol=0)
    assert cache.skipped == 0 and field.evaluations == 20


def test_step_cache_first_call_and_reset_always_evaluate():
    field = CountingField()
    cache = accel.step_cache(field, threshold=100.0)
    x, t = torch.ones(1, 2, 1, 2, 2), torch.ones(1, 1)
    cache(x, t)
    cache(x, t)
    assert field.evaluations == 1
    cache.reset()
    cache(x, t)
    assert field.evaluations == 2 and cache.skipped == 1


def test_step_cache_rejects_negative_threshold():
    with pytest.raises(KinemaError, match="threshold"):
        accel.step_cache(CountingField(), threshold=-1)


def _failing_backend(gm, example_inputs):
    raise RuntimeError("no compiler here")


def test_maybe_compile_falls_back_to_eager_and_warns_once():
    torch._dynamo.reset()
    module = torch.nn.Linear(3, 2)
    fn = accel.maybe_compile(module, backend=_failing_backend)
    x = torch.randn(4, 3)
    with pytest.warns(RuntimeWarning, match="eagerly"):
        out = fn(x)
    torch.testing.assert_close(out, module(x))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.testing.assert_close(fn(x), module(x))


def test_maybe_compile_runs_compiled_and_passes_kinema_errors():
    torch._dynamo.reset()

    def f(x):
        if x.shape[0] == 0:
            raise KinemaError("empty input")
        return x * 2 + 1

    fn = accel.maybe_compile(f, backend="eager")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.testing.assert_close(fn(torch.ones(3)), torch.full((3,), 3.0))
    with pytest.raises(KinemaError, match="empty"):
        fn(torch.ones(0))


def test_configure_threads_uses_physical_cores(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    try:
        info = accel.configure_threads()
        assert info["threads"] == accel.physical_cores() >= 1
        assert accel.configure_threads(1)["threads"] == 1
        monkeypatch.setattr(accel, "physical_cores", lambda: 16)
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # four torchrun ranks on this machine: a quarter each
        assert accel.configure_threads()["threads"] == 4
        monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's (or torchrun's) setting wins
        assert accel.configure_threads()["threads"] == 3
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def dit():
    torch.manual_seed(0)
    model = DiT(preset("debug").dit).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.1)  # adaLN-zero would make every output 0
    return model


def _dit_inputs():
    gen = torch.Generator().manual_seed(1)
    x, ctx = torch.randn(2, 8, 3, 4, 4, generator=gen), torch.randn(2, 6, 384, generator=gen)
    mask = torch.tensor([[True] * 6, [True] * 3 + [False] * 3])
    return x, torch.rand(2, 3, generator=gen), ctx, mask


@pytest.mark.parametrize("autocast", [False, True])
def test_prepared_context_gives_the_same_velocity(dit, autocast):
    x, t, ctx, mask = _dit_inputs()
    prepared = dit.prepare_context(ctx, mask)  # outside autocast, as a sampler may do it
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        got, expected = dit(x, t, prepared), dit(x, t, ctx, mask)
    if autocast:  # keys and values rounded to bfloat16 from float32 instead of computed in it
        assert (got - expected).abs().max() < 0.03 * expected.abs().max()
    else:
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_prepared_context_checks_batch_and_mask(dit):
    x, t, ctx, mask = _dit_inputs()
    with pytest.raises(KinemaError, match="batch"):
        dit(x, t, dit.prepare_context(ctx[:1], mask[:1]))
    with pytest.raises(KinemaError, match="mask"):
        dit(x, t, dit.prepare_context(ctx), mask)
