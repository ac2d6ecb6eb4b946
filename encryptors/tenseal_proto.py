"""Minimal codec for TenSEAL's vector serialisation (protobuf), to reach the SEAL ciphertexts without temp files.

``CKKSVector.serialize()`` / ``BFVVector.serialize()`` (TenSEAL 0.3.18) write a protobuf message with field 1 =
packed uint32 chunk sizes, field 2 = repeated bytes (one SEAL ciphertext each), field 3 = double scale (CKKS only).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from he_leak.errors import CiphertextError

VARINT, FIXED64, LEN = 0, 1, 2


@dataclass(frozen=True)
class VectorProto:
    """The decoded message: per-ciphertext slot counts, SEAL ciphertext blobs, CKKS scale (None for BFV)."""

    sizes: tuple[int, ...]
    ciphertexts: tuple[bytes, ...]
    scale: float | None


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise CiphertextError("TenSEAL vector message is truncated or has a bad varint")
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return value, pos


def _put_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def decode(buf: bytes) -> VectorProto:
    """Decode a serialised TenSEAL CKKS/BFV vector; unknown fields or truncation raise CiphertextError."""
    sizes: list[int] = []
    cts: list[bytes] = []
    scale: float | None = None
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if field == 1 and wire == VARINT:
            value, pos = _varint(buf, pos)
            sizes.append(value)
        elif field in (1, 2) and wire == LEN:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise CiphertextError("TenSEAL vector message is truncated")
            chunk, pos = buf[pos : pos + length], pos + length
            if field == 2:
                cts.append(chunk)
            else:
                sub = 0
                while sub < len(chunk):
                    value, sub = _varint(chunk, sub)
                    sizes.append(value)
        elif field == 3 and wire == FIXED64:
            if pos + 8 > len(buf):
                raise CiphertextError("TenSEAL vector message is truncated")
            (scale,), pos = struct.unpack_from("<d", buf, pos), pos + 8
        else:
            raise CiphertextError(f"unexpected field {field} (wire type {wire}) in a TenSEAL vector message")
    if len(sizes) != len(cts):
        raise CiphertextError(f"TenSEAL vector lists {len(sizes)} sizes for {len(cts)} ciphertexts")
    return VectorProto(tuple(sizes), tuple(cts), scale)


def encode(msg: VectorProto) -> bytes:
    """Encode ``msg`` the way TenSEAL does, so ``ckks_vector_from`` / ``bfv_vector_from`` load it."""
    packed = b"".join(_put_varint(s) for s in msg.sizes)
    out = [bytes([1 << 3 | LEN]), _put_varint(len(packed)), packed]
    for ct in msg.ciphertexts:
        out += [bytes([2 << 3 | LEN]), _put_varint(len(ct)), ct]
    if msg.scale is not None:
        out += [bytes([3 << 3 | FIXED64]), struct.pack("<d", msg.scale)]
    return b"".join(out)
