"""The HE backends of encrypted aggregation (he-aggregate), chosen once per run by name (`--he-backend`).

Every backend is one object with the interface of `encryptors.packing.GradientPacker`: ``encrypt`` (a client packs
its gradient under the public key), ``server().sum`` (the aggregator adds ciphertexts without any secret),
``decrypt`` (the protocol's decryption of the sum: whoever it is meant for), ``decrypt_alone`` (what one party reads
with only the key material it holds), ``cost_bytes`` (what a round sends), ``public_key_bytes``, ``describe``,
``precision`` / ``error_bound``, and the facts ``shares_needed`` (parties whose keys one decryption takes) and
``reproducible`` (whether its keys and noise come from the key holder's KeySeed).

- ``seal``: one CKKS key pair shared by every client (NVFlare's HE filter, FedML-HE's single-key mode), SEAL through
  TenSEAL, seeded from the KeySeed: any client decrypts any ciphertext.
- ``openfhe-threshold``: n-out-of-n threshold CKKS (OpenFHE's multiparty CKKS): each party holds one share of the
  secret key, the public key is joint, and a decryption needs every party's partial decryption
  (`encryptors.openfhe_threshold`; the optional extra ``threshold``).
"""

from __future__ import annotations

from typing import Any

from encryptors.packing import GradientPacker, PackingParams
from he_leak.errors import ConfigError
from he_leak.registry import Registry
from he_leak.seeds import KeySeed

AGGREGATORS: Registry = Registry("HE backend")


@AGGREGATORS.register("seal")
def seal(params: PackingParams, *, parties: int, key_seed: KeySeed) -> GradientPacker:
    """One key pair from ``key_seed``, held by every party (``parties`` share it)."""
    return GradientPacker(params, key_seed=key_seed)


@AGGREGATORS.register("openfhe-threshold")
def openfhe_threshold(params: PackingParams, *, parties: int, key_seed: KeySeed) -> Any:
    """``parties`` key shares, a joint public key; decryption needs all of them."""
    from encryptors.openfhe_threshold import ThresholdPacker

    return ThresholdPacker(params, parties=parties, key_seed=key_seed)


def make_aggregator(name: str, params: PackingParams, *, parties: int, key_seed: KeySeed) -> Any:
    """The backend ``name`` for ``parties`` parties (ConfigError for an unknown name or fewer than one party)."""
    if parties < 1:
        raise ConfigError(f"an aggregation needs at least one party, got {parties}")
    return AGGREGATORS[name](params, parties=parties, key_seed=KeySeed.check(key_seed, f"HE backend {name}"))
