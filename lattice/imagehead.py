"""Dimensions of images read from their headers, without starting ffmpeg:
`lattice add` of a thousand PNGs must not start a thousand processes. An
animated PNG or WebP gets its frame count and length from its chunks (ffmpeg
prints no duration for either). Anything not recognised here, or not whole,
is left to the ffmpeg probe."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
MAX_CHUNKS = 100_000  # a PNG or WebP cut into more chunks than this is left to ffmpeg
_IEND = b"\0\0\0\0IEND\xaeB`\x82"  # the chunk that ends every whole PNG (length 0, type, CRC)


@dataclass(frozen=True)
class Header:
    """What an image's header says, with the names ffmpeg would give:
    a still has frames 1 and no duration; an animated PNG (codec apng) or
    WebP (webp_anim) its frame count and length in seconds."""

    codec: str
    width: int
    height: int
    frames: int = 1
    duration: float | None = None


def image_header(path: Path, ext: str) -> Header | None:
    """The Header of a PNG, WebP or JPEG, or None where the file is not
    whole and sound enough to say (a PNG cut short, a WebP whose RIFF size
    overruns the file): ffmpeg's probe then says what it can decode."""
    try:
        with open(path, "rb") as f:
            if ext == "png":
                return _png(f)
            if ext == "webp":
                return _webp(f)
            if ext in ("jpg", "jpeg"):
                return _jpeg(f)
    except (OSError, struct.error):
        return None
    return None


def _png(f) -> Header | None:
    """Walks the chunks to IEND without reading their data: a PNG cut short
    (no IEND) makes ffmpeg's image looping spin on it, so it is not taken
    at its header's word. acTL (before IDAT) makes it an APNG; its fcTL
    chunks hold each frame's delay. A still (no acTL before the first IDAT)
    that ends with IEND is whole enough: its thousands of IDAT chunks (4 KiB
    each from ffmpeg) are not walked, one read each, in a large `add`."""
    head = f.read(33)
    if len(head) < 33 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    w, h = struct.unpack(">II", head[16:24])
    if not (w and h):
        return None
    end = os.fstat(f.fileno()).st_size
    pos, frames, delay, idat = 33, 0, 0.0, False
    for _ in range(MAX_CHUNKS):
        chunk = f.read(8)
        if len(chunk) < 8:
            return None  # no IEND: cut short
        n, kind = struct.unpack(">I4s", chunk)
        if pos + 12 + n > end or not kind.isalpha():
            return None
        if kind == b"IEND":
            if frames > 1:
                return Header("apng", w, h, frames, round(delay, 6) if delay > 0 else None)
            return Header("png", w, h)
        if kind == b"IDAT":
            if not idat and not frames and end >= pos + 12:
                f.seek(end - 12, 0)
                if f.read(12) == _IEND:
                    return Header("png", w, h)
            idat = True
        elif kind == b"acTL" and not idat and n >= 8:
            frames = struct.unpack(">I", f.read(4))[0]
            f.seek(pos + 8, 0)
        elif kind == b"fcTL" and n >= 26:
            body = f.read(26)
            num, den = struct.unpack(">HH", body[20:24])
            delay += num / (den or 100)
            f.seek(pos + 8, 0)
        pos += 12 + n
        f.seek(pos, 0)
    return None


def _webp(f) -> Header | None:
    head = f.read(30)
    if len(head) < 30 or head[:4] != b"RIFF" or head[8:12] != b"WEBP":
        return None
    end = os.fstat(f.fileno()).st_size
    riff_end = 8 + struct.unpack("<I", head[4:8])[0]
    if riff_end > end:
        return None  # cut short
    chunk = head[12:16]
    if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", head[26:30])
        return Header("webp", w & 0x3FFF, h & 0x3FFF)
    if chunk == b"VP8L" and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], "little")
        return Header("webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk != b"VP8X" or not head[20] & 0x02:
        return None  # an extended still (alpha, ICC, EXIF): ffmpeg knows its size
    w = 1 + int.from_bytes(head[24:27], "little")
    h = 1 + int.from_bytes(head[27:30], "little")
    # Animated: one ANMF chunk per frame, its duration in ms at offset 12.
    pos, frames, ms = 12, 0, 0
    for _ in range(MAX_CHUNKS):
        if pos + 8 > riff_end:
            break
        f.seek(pos, 0)
        kind, n = struct.unpack("<4sI", f.read(8))
        if pos + 8 + n > riff_end:
            return None
        if kind == b"ANMF" and n >= 16:
            frames += 1
            ms += int.from_bytes(f.read(15)[12:15], "little")
        pos += 8 + n + (n & 1)
    else:
        return None
    return Header("webp_anim", w, h, frames, ms / 1000 if ms else None) if frames else None


def _jpeg(f) -> Header | None:
    """The SOF's size, turned a quarter where the EXIF orientation says so
    (5 to 8: a phone's portrait photo), as ffmpeg turns it when it decodes."""
    f.seek(0)
    if f.read(2) != b"\xff\xd8":
        return None
    turned = False
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
            if turned:
                w, h = h, w
            return Header("mjpeg", w, h) if w and h else None
        if kind == 0xD9 or length < 2:
            return None
        if kind == 0xE1 and length > 16:
            body = f.read(length - 2)
            if body[:6] == b"Exif\0\0":
                turned = _exif_orientation(body[6:]) in (5, 6, 7, 8)
            continue
        f.seek(length - 2, 1)


def _exif_orientation(tiff: bytes) -> int | None:
    """Tag 0x0112 of IFD0 in an EXIF (TIFF) block."""
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None or len(tiff) < 10:
        return None
    ifd = struct.unpack(order + "I", tiff[4:8])[0]
    if ifd + 2 > len(tiff):
        return None
    count = struct.unpack(order + "H", tiff[ifd:ifd + 2])[0]
    for i in range(count):
        entry = tiff[ifd + 2 + 12 * i: ifd + 14 + 12 * i]
        if len(entry) < 12:
            return None
        tag, typ = struct.unpack(order + "HH", entry[:4])
        if tag == 0x0112 and typ == 3:
            return struct.unpack(order + "H", entry[8:10])[0]
    return None


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
