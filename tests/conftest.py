import os

# Spinning OpenMP threads make tests 5-10x slower on a busy 2-core machine (bench/results/bench.md);
# the policy only counts if set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def debug_pipe():
    """The tiny random `debug` model, loaded once for the whole session."""
    from kinema.pipeline import Pipeline

    return Pipeline.load("debug")


@pytest.fixture(scope="session")
def fp32_debug_pipe():
    """The `debug` model without bf16 autocast (faster at tiny sizes), loaded once for the whole session."""
    from kinema.checkpoint import load_model
    from kinema.pipeline import Pipeline

    return Pipeline(load_model("debug"), bf16=False)
