from pathlib import Path

import pytest
import torch


def _export_tiny(tmp_path_factory, dtype: torch.dtype) -> Path:
    """A `tiny` model (both decoders, 32 px, N = 3) with seed-0 random weights, exported as generate loads it."""
    from diffusiongs.system import DiffusionGS, preset
    from diffusiongs.system.io import export_model

    torch.manual_seed(0)
    model = DiffusionGS(preset("tiny"))
    return export_model(tmp_path_factory.mktemp("model") / "tiny", model.cfg, model, dtype)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """The tiny model stored in float16, as the shipped model is."""
    return _export_tiny(tmp_path_factory, torch.float16)


@pytest.fixture(scope="session")
def tiny_model_f32(tmp_path_factory) -> Path:
    """The tiny model stored in float32 (for comparisons with the in-memory network)."""
    return _export_tiny(tmp_path_factory, torch.float32)


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
