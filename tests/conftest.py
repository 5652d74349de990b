import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def debug_pipe():
    """The tiny random `debug` model, loaded once for the whole session."""
    from kinema.pipeline import Pipeline

    return Pipeline.load("debug")
