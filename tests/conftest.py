"""Shared test settings: small thread count, deterministic torch."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    torch.set_num_threads(2)
    yield
