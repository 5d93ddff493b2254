"""A checkpoint's weights file damaged the way a disk or a copy damages it: one flipped bit."""

from __future__ import annotations

import json
import struct
from pathlib import Path

HEAD_WEIGHT = "sst_head.1.weight"


def weight_offset(weights: Path, key: str) -> int:
    """The byte offset of `key`'s first value in a safetensors file (8-byte header length, JSON
    header, then the tensors at their data_offsets)."""
    raw = weights.read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])
    return 8 + header_len + int(header[key]["data_offsets"][0])


def flip_exponent_bit(checkpoint: Path) -> None:
    """One flipped bit, the top exponent bit of the first SST head weight (float32, little
    endian): a small weight becomes ~1e37, still finite, and every SST prediction garbage."""
    weights = checkpoint / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    offset = weight_offset(weights, HEAD_WEIGHT)
    before = struct.unpack("<f", raw[offset : offset + 4])[0]
    raw[offset + 3] ^= 0x40
    after = struct.unpack("<f", raw[offset : offset + 4])[0]
    assert abs(before) < 1 and 1e30 < abs(after) < float("inf")
    weights.write_bytes(bytes(raw))
