"""Scenarios (threat models), registered by name in SCENARIOS."""

from he_leak.scenarios import ckks_input, he_aggregate, he_train, plain, secagg  # noqa: F401
from he_leak.scenarios.base import SCENARIOS, Estimates, Scenario, model_spec

__all__ = ["SCENARIOS", "Estimates", "Scenario", "model_spec"]
