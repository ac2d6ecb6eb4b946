"""Shared test settings and fixtures: small thread count; the stub attacks some sweep tests register; pytester (the
pytest plugin's tests run pytest inside pytest)."""

import pytest
import torch

pytest_plugins = ("pytester",)


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    torch.set_num_threads(2)
    yield


@pytest.fixture()
def stub_attacks():
    """Register the stub attacks of tests/stubs.py for the test (names are checked against the registry); removed
    after."""
    from stubs import STUBS, HalfAttack

    from he_leak.attacks import ATTACKS

    added = [name for name in STUBS if name not in ATTACKS]
    for name in added:
        ATTACKS[name] = HalfAttack
    yield
    for name in added:
        ATTACKS.pop(name, None)
