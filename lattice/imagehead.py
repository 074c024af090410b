"""Dimensions of still images read from their headers, without starting
ffmpeg: `lattice add` of a thousand PNGs must not start a thousand processes.
Anything not recognised here is left to the ffmpeg probe."""

from __future__ import annotations

import struct
from pathlib import Path

_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def still_image(path: Path, ext: str) -> tuple[str, int, int] | None:
    """(codec, width, height) as ffmpeg would report them, or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if ext == "png":
                return _png(head)
            if ext == "webp":
                return _webp(head)
            if ext in ("jpg", "jpeg"):
                return _jpeg(f)
    except (OSError, struct.error):
        return None
    return None


def _png(head: bytes):
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR" or b"acTL" in head:
        return None  # not a plain PNG (an animated one goes to ffmpeg)
    w, h = struct.unpack(">II", head[16:24])
    return ("png", w, h) if w and h else None


def _webp(head: bytes):
    if head[:4] != b"RIFF" or head[8:12] != b"WEBP":
        return None
    chunk = head[12:16]
    if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", head[26:30])
        return "webp", w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L" and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], "little")
        return "webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None  # extended (VP8X) files may be animated: ffmpeg knows


def _jpeg(f) -> tuple[str, int, int] | None:
    f.seek(0)
    if f.read(2) != b"\xff\xd8":
        return None
    while True:
        marker = f.read(2)
        if len(marker) < 2 or marker[0] != 0xFF:
            return None
        while marker[1] == 0xFF:  # fill bytes
            marker = marker[1:] + f.read(1)
        kind = marker[1]
        if kind in (0xD8, 0x01) or 0xD0 <= kind <= 0xD7:
            continue
        length = struct.unpack(">H", f.read(2))[0]
        if kind in _JPEG_SOF:
            seg = f.read(5)
            h, w = struct.unpack(">HH", seg[1:5])
            return ("mjpeg", w, h) if w and h else None
        if kind == 0xD9 or length < 2:
            return None
        f.seek(length - 2, 1)


# The first bytes every file of these formats starts with (webp: RIFF....WEBP).
_MAGIC = {"png": (b"\x89PNG\r\n\x1a\n",), "jpg": (b"\xff\xd8\xff",), "jpeg": (b"\xff\xd8\xff",),
          "gif": (b"GIF87a", b"GIF89a"), "webp": (b"RIFF",)}


def lacks_signature(path: Path, ext: str) -> bool:
    """True when `path`, named .`ext`, cannot be that format: its first bytes
    are not the format's signature (a text file named .png). False when they
    are, or when the format is not one checked here."""
    magic = _MAGIC.get(ext.lower())
    if magic is None:
        return False
    with open(path, "rb") as f:
        head = f.read(12)
    if ext.lower() == "webp" and head[8:12] != b"WEBP":
        return True
    return not head.startswith(magic)
