"""Reader/writer for Microsoft SEAL's binary Ciphertext format (SEAL 4.x), so residues can be read and rewritten.

Layout (verified by round trip against TenSEAL 0.3.18 / SEAL 4.x):

- SEAL header, 16 bytes ``<HBBBBHQ``: magic 0xA15E, header size 16, version major, minor, compression mode
  (0 none, 1 zlib, 2 zstd), reserved 0, total byte size including the header;
- body (compressed as a whole unless mode 0): parms_id 4 x uint64, is_ntt_form uint8, size, poly_modulus_degree,
  coeff_modulus_size (uint64 each), scale float64, correction_factor uint64, then the coefficient DynArray:
  its own uncompressed 16-byte SEAL header, a uint64 count, then ``count`` uint64 residues ordered
  polynomial-major: [polynomial][prime][coefficient].
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import zstandard

from he_leak.errors import CiphertextError

MAGIC = 0xA15E
HEADER = struct.Struct("<HBBBBHQ")
MEMBERS = struct.Struct("<4QB3QdQ")
COUNT = struct.Struct("<Q")
COMPR_NONE, COMPR_ZLIB, COMPR_ZSTD = 0, 1, 2
MAX_DEGREE = 1 << 17


@dataclass(frozen=True, eq=False)
class SealCiphertext:
    """A parsed SEAL ciphertext; ``data`` is uint64 of shape (size, coeff_modulus_size, poly_modulus_degree)."""

    parms_id: tuple[int, int, int, int]
    is_ntt_form: bool
    size: int
    poly_modulus_degree: int
    coeff_modulus_size: int
    scale: float
    correction_factor: int
    data: np.ndarray
    version: tuple[int, int]

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.size, self.coeff_modulus_size, self.poly_modulus_degree)


def _header(blob: bytes | memoryview, where: str) -> tuple[int, int, int, int]:
    """Validate a SEAL header; return (major, minor, compr_mode, total size)."""
    if len(blob) < HEADER.size:
        raise CiphertextError(f"SEAL {where} is truncated: {len(blob)} bytes, the header alone needs {HEADER.size}")
    magic, hsize, major, minor, mode, reserved, total = HEADER.unpack_from(blob, 0)
    if magic != MAGIC:
        raise CiphertextError(f"not a SEAL {where}: magic 0x{magic:04X}, expected 0x{MAGIC:04X}")
    if hsize != HEADER.size or reserved != 0 or mode not in (COMPR_NONE, COMPR_ZLIB, COMPR_ZSTD):
        raise CiphertextError(f"corrupt SEAL {where} header (header size {hsize}, mode {mode}, reserved {reserved})")
    return major, minor, mode, total


def _decompress(payload: bytes | memoryview, mode: int) -> bytes:
    if mode == COMPR_NONE:
        return bytes(payload)
    if mode == COMPR_ZLIB:
        raise CiphertextError("zlib-compressed SEAL ciphertexts are not supported; save with zstd or no compression")
    dec = zstandard.ZstdDecompressor().decompressobj()
    try:
        body = dec.decompress(bytes(payload))
    except zstandard.ZstdError as err:
        raise CiphertextError(f"SEAL ciphertext body does not decompress: {err}") from err
    if not dec.eof:
        raise CiphertextError("SEAL ciphertext body is truncated (zstd frame incomplete)")
    if dec.unused_data:
        raise CiphertextError(f"{len(dec.unused_data)} bytes of trailing garbage after the zstd frame")
    return body


def unwrap(blob: bytes, what: str = "ciphertext") -> tuple[tuple[int, int], bytes]:
    """The SEAL version and the decompressed body of any serialised SEAL object; CiphertextError if malformed."""
    major, minor, mode, total = _header(blob, what)
    if total != len(blob):
        kind = "truncated" if total > len(blob) else "followed by trailing garbage"
        raise CiphertextError(f"SEAL {what} is {kind}: header says {total} bytes, got {len(blob)}")
    return (major, minor), _decompress(memoryview(blob)[HEADER.size :], mode)


def wrap(version: tuple[int, int], body: bytes) -> bytes:
    """An uncompressed SEAL object: header + ``body`` (the inverse of ``unwrap``)."""
    return HEADER.pack(MAGIC, HEADER.size, *version, COMPR_NONE, 0, HEADER.size + len(body)) + body


def object_size(blob: bytes | memoryview, what: str) -> int:
    """Total byte size of the SEAL object at the start of ``blob`` (from its header)."""
    return _header(blob, what)[3]


def parse(blob: bytes) -> SealCiphertext:
    """Parse a SEAL ciphertext; anything malformed raises CiphertextError."""
    (major, minor), body = unwrap(blob)
    if len(body) < MEMBERS.size:
        raise CiphertextError(f"SEAL ciphertext body too short: {len(body)} bytes")
    *pid, ntt, size, degree, nmod, scale, corr = MEMBERS.unpack_from(body, 0)
    if ntt > 1 or degree & (degree - 1) or not 0 < degree <= MAX_DEGREE or not 0 < nmod <= 64 or not 0 < size <= 16:
        raise CiphertextError(f"implausible SEAL ciphertext sizes (size {size}, N {degree}, primes {nmod}, ntt {ntt})")
    arr = memoryview(body)[MEMBERS.size :]
    _, _, arr_mode, arr_total = _header(arr, "coefficient array")
    count_expected = size * nmod * degree
    if arr_mode != COMPR_NONE or arr_total != len(arr) or arr_total != HEADER.size + COUNT.size + 8 * count_expected:
        raise CiphertextError(
            f"SEAL coefficient array has {len(arr)} bytes (header says {arr_total}, mode {arr_mode}); "
            f"expected {HEADER.size + COUNT.size + 8 * count_expected} for {size}x{nmod}x{degree} residues"
        )
    (count,) = COUNT.unpack_from(arr, HEADER.size)
    if count != count_expected:
        raise CiphertextError(f"SEAL coefficient count {count} != size*primes*N = {count_expected}")
    data = np.frombuffer(arr, dtype="<u8", offset=HEADER.size + COUNT.size).reshape(size, nmod, degree)
    return SealCiphertext(
        tuple(pid), bool(ntt), size, degree, nmod, scale, corr, data.astype(np.uint64), (major, minor)
    )


def dump(ct: SealCiphertext, *, compress: bool) -> bytes:
    """Serialise ``ct`` in SEAL's format, zstd-compressed or not (SEAL loads both)."""
    data = np.asarray(ct.data)
    if data.shape != ct.shape:
        raise CiphertextError(f"ciphertext data has shape {data.shape}, expected {ct.shape}")
    count = data.size
    array = (
        HEADER.pack(MAGIC, HEADER.size, *ct.version, COMPR_NONE, 0, HEADER.size + COUNT.size + 8 * count)
        + COUNT.pack(count)
        + np.ascontiguousarray(data, dtype="<u8").tobytes()
    )
    members = MEMBERS.pack(
        *ct.parms_id,
        int(ct.is_ntt_form),
        ct.size,
        ct.poly_modulus_degree,
        ct.coeff_modulus_size,
        ct.scale,
        ct.correction_factor,
    )
    body = members + array
    mode = COMPR_NONE
    if compress:
        body, mode = zstandard.ZstdCompressor().compress(body), COMPR_ZSTD
    return HEADER.pack(MAGIC, HEADER.size, *ct.version, mode, 0, HEADER.size + len(body)) + body


def check_residues(ct: SealCiphertext, moduli: Sequence[int]) -> None:
    """Raise CiphertextError if any residue is not below its prime q_j."""
    if len(moduli) != ct.coeff_modulus_size:
        raise CiphertextError(f"ciphertext has {ct.coeff_modulus_size} primes, the parameters have {len(moduli)}")
    q = np.asarray(moduli, dtype=np.uint64)[None, :, None]
    bad = np.asarray(ct.data) >= q
    if bad.any():
        s, j, k = (int(i[0]) for i in np.nonzero(bad))
        raise CiphertextError(
            f"{int(bad.sum())} residue(s) are >= their prime, e.g. polynomial {s}, prime {j} "
            f"(q={moduli[j]}), coefficient {k}: {int(ct.data[s, j, k])}; not a valid ciphertext"
        )


PLAIN_MEMBERS = struct.Struct("<4QQd")


def plaintext_residues(blob: bytes, degree: int) -> np.ndarray:
    """The residues of a serialised SEAL Plaintext (or SecretKey, which is one), shape (primes, N): members
    parms_id (4 × uint64), coeff_count (uint64), scale (double), then the coefficient DynArray."""
    _, body = unwrap(blob, "plaintext")
    if len(body) < PLAIN_MEMBERS.size:
        raise CiphertextError(f"SEAL plaintext body too short: {len(body)} bytes")
    *_, coeff_count, _ = PLAIN_MEMBERS.unpack_from(body, 0)
    arr = memoryview(body)[PLAIN_MEMBERS.size :]
    _header(arr, "plaintext coefficient array")
    (count,) = COUNT.unpack_from(arr, HEADER.size)
    if count != coeff_count or count % degree or len(arr) != HEADER.size + COUNT.size + 8 * count:
        raise CiphertextError(f"SEAL plaintext holds {count} coefficients in {len(arr)} bytes; expected a multiple "
                              f"of N = {degree} matching coeff_count {coeff_count}")  # fmt: skip
    data = np.frombuffer(arr, dtype="<u8", offset=HEADER.size + COUNT.size, count=count)
    return data.astype(np.uint64).reshape(-1, degree)
