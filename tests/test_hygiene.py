"""Key hygiene: everything an attack receives (the pickled Observation) holds nothing from which a secret or the
truth can be rebuilt — no inputs, plaintext or labels (at any dtype), no secret key or secret map, no key seed (its
bytes, hex or SEAL PRNG words), not even the run's seed or the client's noise seed — for every scenario and
encryptor. Each search is shown to find its target where the target does live. A byte search cannot see a derived
chain (a public value computed from the run's seed); tests/test_key_secrecy.py plays that attacker."""

import pickle

import numpy as np
import pytest

from he_leak.config import RunConfig
from he_leak.runner import prepare
from he_leak.seeds import KeySeed, derive, words

SEED = 987_654_321  # distinctive, so that finding it is no accident
KEY = KeySeed.from_hex("9e" * 32)  # the key holder's test secret
CASES = [
    dict(scenario="plain"),
    *(dict(scenario="ckks-input", encryptor=e) for e in ("ckks", "bfv", "permute", "linear-mask", "plain")),
    dict(scenario="he-train", model="logreg", loss="poly-sigmoid", batch=4),
    dict(scenario="he-aggregate", role="server", clients=2, encrypt_fraction=0.5, select="random"),
    dict(scenario="he-aggregate", role="client", clients=2),
]


def _id(case: dict) -> str:
    return "-".join(str(v) for v in case.values())


def _patterns_of_array(values: np.ndarray) -> list[bytes]:
    """The array's bytes at every dtype it could be stored in (≥ 32 bytes each, so matches are no accident)."""
    flat = np.asarray(values, np.float64).reshape(-1)
    out = [flat.astype(dt).tobytes() for dt in (np.float64, np.float32, np.float16)]
    if np.all((flat >= 0) & (flat <= 1)):
        out.append(np.rint(flat * 255).astype(np.uint8).tobytes())
    return [p[:256] for p in out if len(p) >= 32]


def _seed_patterns(seed: int) -> list[bytes]:
    """The seed and its derived words as stored by numpy (8 bytes), as text, and as pickle stores a Python int (the
    shortest little-endian two's complement: 6 bytes for a 40-bit seed)."""
    out = [seed.to_bytes(8, "little"), str(seed).encode(), seed.to_bytes(seed.bit_length() // 8 + 1, "little")]
    out += [w.to_bytes(8, "little") for w in words(seed)]
    return out


def _key_patterns(key: KeySeed) -> list[bytes]:
    """A key seed as stored: its bytes, its hex text, and the 8 words SEAL's PRNG would be seeded with (as uint64s,
    and as pickle stores a Python int)."""
    first, *_, last = key.prng_words()
    as_int = [w.to_bytes(w.bit_length() // 8 + 1, "little") for w in (first, last)]
    return [key.material, key.hex().encode(), first.to_bytes(8, "little"), last.to_bytes(8, "little"), *as_int]


def _secret_patterns(scenario) -> list[bytes]:
    enc = getattr(scenario, "enc", None)
    if enc is None:
        return []
    if enc.name in ("ckks", "bfv"):
        secret = enc.context.save(enc.keys.secret)
    elif enc.name in ("permute", "linear-mask"):
        secret = b"".join(np.ascontiguousarray(part).tobytes() for part in enc._secret)
    else:
        return []
    return [secret[i : i + 32] for i in (len(secret) // 4, len(secret) // 2, 3 * len(secret) // 4)]


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_observation_holds_no_truth_no_secret_no_seed(case):
    fields = {"model": "mlp", "data": "digits", "batch": 4, "index": 10, "seed": SEED, **case}
    fields.update({"hidden": (8,)} if fields["model"] == "mlp" else {})
    ctx = prepare(RunConfig(**fields), key_seed=KEY)
    scenario, obs, truth = ctx.scenario, ctx.observation, ctx.truth
    blob = pickle.dumps(obs)
    truth_patterns = _patterns_of_array(truth.inputs.numpy()) + _patterns_of_array(truth.plaintext.numpy())
    labels = truth.labels.numpy()
    truth_patterns += [labels.astype(np.int64).tobytes()] if len(labels) >= 4 else []
    seeds = [SEED, derive(SEED, "client", 0, "defence")]
    secrets = _secret_patterns(scenario)
    assert all(p in pickle.dumps(scenario.enc) for p in secrets) if secrets else True  # the search works
    for pattern in truth_patterns + secrets + _key_patterns(KEY) + [p for s in seeds for p in _seed_patterns(s)]:
        assert pattern not in blob, pattern[:16]


@pytest.mark.parametrize("stored", [np.int64, int, str])
def test_the_seed_search_finds_a_seed_however_it_is_pickled(stored):
    seed = derive(SEED, "client", 0, "defence")
    assert any(p in pickle.dumps({"seed": stored(seed)}) for p in _seed_patterns(seed))


@pytest.mark.parametrize("stored", [lambda k: k, KeySeed.hex, KeySeed.prng_words,
                                    lambda k: np.array(k.prng_words(), np.uint64)])
def test_the_key_search_finds_a_key_seed_however_it_is_kept(stored):
    assert any(p in pickle.dumps({"key_seed": stored(KEY)}) for p in _key_patterns(KEY))


def test_the_truth_search_finds_inputs_where_they_live():
    truth = prepare(RunConfig(model="mlp", hidden=(8,), batch=4, seed=SEED)).truth
    assert any(p in pickle.dumps(truth.inputs) for p in _patterns_of_array(truth.inputs.numpy()))
