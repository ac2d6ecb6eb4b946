"""Attacks, registered by name in ATTACKS (importing this package registers all of them)."""

from he_leak.attacks import analytic, dlg, ig, imprint, layerwise  # noqa: F401
from he_leak.attacks.base import ATTACKS, Attack, AttackOptions, make_attack

__all__ = ["ATTACKS", "Attack", "AttackOptions", "make_attack"]
