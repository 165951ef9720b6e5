"""Tiny valid images the stand-ins serve as avatars and photos."""

from __future__ import annotations

TINY_PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00"
    b"\x00\x90wS\xde\x00\x00\x00\x0cIDATx\xdac0N;\x03\x00\x025\x01f\xb4o\x97\x9e\x00\x00"
    b"\x00\x00IEND\xaeB`\x82"
)
"""A valid 1x1 RGB PNG (one blue pixel)."""

TINY_JPEG = bytes.fromhex(
    "ffd8"  # SOI
    "ffe000104a46494600010100000100010000"  # APP0: JFIF 1.1, no thumbnail
    "ffdb004300"  # DQT: table 0, 8-bit values, all ones
    "01010101010101010101010101010101010101010101010101010101010101010101"
    "010101010101010101010101010101010101010101010101010101010101"
    "ffc0000b080001000101011100"  # SOF0: 8 bits, 1x1, one component (1x1 sampling, table 0)
    "ffc40014000100000000000000000000000000000000"  # DHT: DC table 0, one 1-bit code: 0x00
    "ffc40014100100000000000000000000000000000000"  # DHT: AC table 0, one 1-bit code: EOB
    "ffda0008010100003f00"  # SOS: component 1 with tables 0/0, coefficients 0..63
    "3f"  # DC difference 0 ("0"), end of block ("0"), padded with ones
    "ffd9"  # EOI
)
"""A valid 1x1 baseline greyscale JPEG (one mid-grey pixel)."""
