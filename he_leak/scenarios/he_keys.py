"""The he-train server's key recovery from shared decryptions (IND-CPA-D; encryptors.key_recovery) and its scoring.

Attacker side (``attack``): what the server holds — the gradient ciphertexts it evaluated, what the key holder
handed over of their decryption (``--disclosure``: the gradient's entries, he-train's default; every slot's real
part; every slot), the public key among the evaluation keys, and the client's encrypted inputs (x and one-hot y).
With a key that passes its own public-key check it decrypts those inputs. Nothing here sees the secret key or the
truth; ``score`` compares the outcome with them afterwards (the key holder's secret key, the true inputs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from encryptors.circuit import CkksCircuit, CtVector
from encryptors.key_recovery import KeyRecovery, attacker_view, decrypt, recover_key, reencoding_error
from encryptors.seal_backend import SealContext


@dataclass(frozen=True, eq=False)
class ServerKey:
    """The server's outcome: the attack's record, its views (for scoring) and, with a key, the inputs it read."""

    recovery: KeyRecovery
    views: tuple
    inputs: np.ndarray | None  # B × input size, decrypted with the recovered key (None: no key)
    labels: np.ndarray | None  # B, the argmax of each decrypted one-hot label


def attack(context: SealContext, public_key, vectors: Sequence[CtVector], disclosed: Sequence[list[np.ndarray]],
           inputs: Sequence[tuple[CtVector, CtVector]], *, disclosure: str, batch: int) -> ServerKey:  # fmt: skip
    """Recover the key from the gradient ciphertexts and what was disclosed of them, then decrypt the inputs."""
    views = [v for ct, shared in zip(vectors, disclosed, strict=True)
             for v in attacker_view(ct.layout, ct.ciphertexts, shared, disclosure, batch=batch)]  # fmt: skip
    recovery = recover_key(context, public_key, views, disclosure)
    if recovery.secret is None:
        return ServerKey(recovery, tuple(views), None, None)

    def read(ct: CtVector) -> np.ndarray:
        return ct.layout.unpack([decrypt(context, recovery.secret, c).real for c in ct.ciphertexts])

    xs = np.stack([read(x) for x, _ in inputs])
    ys = np.array([int(np.argmax(read(y))) for _, y in inputs])
    return ServerKey(recovery, tuple(views), xs, ys)


def score(circuit: CkksCircuit, outcome: ServerKey, images: torch.Tensor, labels: torch.Tensor) -> dict[str, object]:
    """The Result's ``key_recovery``: the attacker's own verdict and figures beside the truth's (is it the key;
    how far its re-encoded polynomials are from the true decryptions; how well it read the inputs)."""
    rec = outcome.recovery
    truth = circuit.secret_coefficients()
    row: dict[str, object] = {
        "disclosure": rec.disclosure, "recovered": rec.recovered, "seconds": rec.seconds,
        "key_correct": rec.secret is not None and bool(np.array_equal(rec.secret, truth)),
        "equations": rec.equations, "unknowns": int(truth.size), "rounding_gap": rec.rounding_gap,
        "public_key_residual_bits": rec.residual_bits,
        "reencoding_error": reencoding_error(circuit.context, rec, outcome.views, truth),
    }  # fmt: skip
    if outcome.inputs is not None:
        true_x = images.double().reshape(len(images), -1).numpy()
        row["inputs_max_error"] = float(np.abs(outcome.inputs - true_x).max())
        row["labels_correct"] = float(np.mean(outcome.labels == labels.numpy()))
    return row
