"""Dimensions of images read from their headers, without starting ffmpeg:
`lattice add` of a thousand PNGs must not start a thousand processes. An
animated PNG or WebP gets its frame count and length from its chunks (ffmpeg
prints no duration for either), a GIF from its blocks (ffmpeg prints an
estimate). Anything not recognised here, or not whole, is left to the
ffmpeg probe. An SVG's size is read from its root element (ffmpeg reads
no SVG)."""

from __future__ import annotations

import math
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
MAX_CHUNKS = 100_000  # a PNG or WebP cut into more chunks than this is left to ffmpeg
MAX_GIF_FRAMES = 100_000  # a GIF of more frames than this is left to ffmpeg
MAX_GIF_BLOCKS = 1_000_000  # and one of more data sub-blocks (255 bytes each at most) than this
_IEND = b"\0\0\0\0IEND\xaeB`\x82"  # the chunk that ends every whole PNG (length 0, type, CRC)


@dataclass(frozen=True)
class Header:
    """What an image's header says, with the names ffmpeg would give:
    a still has frames 1 and no duration; an animated PNG (codec apng),
    WebP (webp_anim) or GIF (gif) its frame count and length in seconds."""

    codec: str
    width: int
    height: int
    frames: int = 1
    duration: float | None = None


def image_header(path: Path, ext: str) -> Header | None:
    """The Header of a PNG, WebP, JPEG or GIF, or None where the file is not
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
            if ext == "gif":
                return _gif(f)
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


class _Forward:
    """A file read forward one bounded chunk at a time: a GIF's blocks are
    walked without the whole file in memory, or a read() per sub-block."""

    CHUNK = 1 << 18

    def __init__(self, f) -> None:
        self.f, self.buf, self.pos, self.base = f, b"", 0, 0  # buf holds the file from offset base
        self.blocks = MAX_GIF_BLOCKS

    def _fill(self, n: int) -> bool:
        """Whether the n bytes at pos are in buf (reading them if not)."""
        if self.pos + n <= len(self.buf):
            return True
        self.base += self.pos
        self.f.seek(self.base, 0)
        self.buf, self.pos = self.f.read(max(n, self.CHUNK)), 0
        return len(self.buf) >= n

    def take(self, n: int) -> bytes | None:
        """The next n bytes, or None where the file ends first."""
        if not self._fill(n):
            return None
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def skip(self, n: int) -> None:
        self.pos += n  # past the end of buf: the next read seeks there

    def sub_blocks(self) -> bool:
        """Skip data sub-blocks to their terminator (a length byte of 0).
        False where the file ends first, or there are too many to walk."""
        buf, pos, left = self.buf, self.pos, self.blocks
        while True:
            if pos >= len(buf):
                self.pos = pos
                if not self._fill(1):
                    return False
                buf, pos = self.buf, self.pos
            n = buf[pos]
            pos += 1 + n
            if not n:
                break
            left -= 1
            if left < 0:
                return False
        self.pos, self.blocks = pos, left
        return True

    def offset(self) -> int:
        return self.base + self.pos


def _gif(f) -> Header | None:
    """Walks the blocks (extensions, images, trailer) without decoding any
    image data, and counts frames and their delays as ffmpeg decodes them:
    ffmpeg's GIF parser cuts the file into one packet per picture, before
    each extension block that follows an image and, once any extension has
    been seen, before each image that directly follows one; its decoder
    makes one frame of the first image in a packet. A packet lasts the
    delay of the Graphic Control Extension read last (in 1/100 s; 0 counts
    as 10, 1 stays 1, an image with no GCE of its own keeps the one
    before). A single picture is a still (frames 1, no duration), as a
    PNG. Anything out of the ordinary (a block ffmpeg would refuse, the file
    cut inside a block, bytes other than zero padding after the trailer,
    more frames or blocks than MAX_GIF_*) is left to ffmpeg's probe."""
    r = _Forward(f)
    head = r.take(13)
    if head is None or head[:6] not in (b"GIF87a", b"GIF89a"):
        return None
    w, h, packed = struct.unpack("<HHB", head[6:11])
    if not (0 < w <= 32767 and 0 < h <= 32767):
        return None
    palette = bool(packed & 0x80)
    if palette:
        r.skip(3 << ((packed & 7) + 1))
    frames = hundredths = delay = 0
    pending = extension_seen = False  # an image since the last packet began; any extension yet

    while True:
        intro = r.take(1)
        if intro is None:
            break  # the end of the file at a block's end: ffmpeg decodes what came before
        if intro == b";":
            rest = os.fstat(f.fileno()).st_size - r.offset()
            if rest and (rest > 65536 or r.take(rest) != bytes(rest)):
                return None  # more after the trailer: ffmpeg reads it into the last packet
            break
        if pending and (intro == b"!" or extension_seen):
            frames, hundredths, pending = frames + 1, hundredths + (delay or 10), False
            if frames > MAX_GIF_FRAMES:
                return None
        if intro == b"!":
            extension_seen = True
            label = r.take(1)
            if label == b"\xf9":
                body = r.take(6)  # length 4, flags, delay (2), transparent index, terminator
                if body is None or body[0] != 4 or body[5] != 0:
                    return None
                delay = body[2] | body[3] << 8
            elif label is None or not r.sub_blocks():
                return None
        elif intro == b",":
            d = r.take(9)
            if d is None:
                return None
            left, top, iw, ih, flags = struct.unpack("<HHHHB", d)
            if not (iw and ih and left + iw <= w and top + ih <= h and (palette or flags & 0x80)):
                return None  # outside the screen, or no colours: ffmpeg's decoder refuses it
            if flags & 0x80:
                r.skip(3 << ((flags & 7) + 1))
            code_size = r.take(1)
            if code_size is None or not 1 <= code_size[0] <= 12 or not r.sub_blocks():
                return None
            pending = True
        else:
            return None
    if pending:
        frames, hundredths = frames + 1, hundredths + (delay or 10)
    if not frames or frames > MAX_GIF_FRAMES:
        return None
    if frames == 1:
        return Header("gif", w, h)
    return Header("gif", w, h, frames, hundredths / 100)


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


# -- SVG ------------------------------------------------------------------------

SVG_HEAD = 64 * 1024  # the root element's start tag is looked for in this much of the file
MAX_SVG_SIDE = 1_000_000  # a larger width or height is no picture size: none is recorded
# CSS's absolute units in px (1in = 96px); em, ex and % depend on where the SVG is shown
_SVG_UNITS = {"": 1.0, "px": 1.0, "in": 96.0, "cm": 96 / 2.54, "mm": 96 / 25.4, "q": 96 / 101.6, "pt": 4 / 3, "pc": 16.0}
_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_LENGTH = re.compile(rf"\s*({_NUMBER})([A-Za-z]*)\s*")
_VIEWBOX = re.compile(r"\s*" + r"(?:\s*,\s*|\s+)".join([f"({_NUMBER})"] * 4) + r"\s*")
_SPACE = re.compile(r"\s*")
_ROOT = re.compile(r"<(?:[A-Za-z_][\w.-]*:)?svg(?=[\s/>])")
_ATTR = re.compile(r"\s+([A-Za-z_:][\w:.-]*)\s*=\s*(?:\"([^\"<]*)\"|'([^'<]*)')")
_TAG_END = re.compile(r"\s*/?>")


def svg_size(path: Path) -> tuple[int, int] | None:
    """The size in px of an SVG, from its root <svg> element's width and
    height (numbers, px or another absolute unit), else its viewBox (with
    one of width and height, the other follows the viewBox's shape). Read
    from the first SVG_HEAD bytes with a scan of the prolog and a regex over
    the start tag, never an XML parser: no entity is expanded, no DTD or
    other file fetched. None where that start tag is not found whole and
    well formed, or gives no size."""
    try:
        with open(path, "rb") as f:
            head = f.read(SVG_HEAD)
    except OSError:
        return None
    text = head.decode("utf-16", "ignore") if head[:2] in (b"\xff\xfe", b"\xfe\xff") else head.decode("utf-8", "replace")
    attrs = _svg_root_attributes(text.lstrip("\ufeff"))
    if attrs is None:
        return None
    w, h = _svg_length(attrs.get("width")), _svg_length(attrs.get("height"))
    box = _VIEWBOX.fullmatch(attrs.get("viewBox", ""))
    vw, vh = (float(box[3]), float(box[4])) if box else (0.0, 0.0)
    if not (w and h) and vw > 0 and vh > 0:
        w, h = (w, w * vh / vw) if w else (h * vw / vh, h) if h else (vw, vh)
    if not (w and h and math.isfinite(w) and math.isfinite(h) and w <= MAX_SVG_SIDE and h <= MAX_SVG_SIDE):
        return None
    return max(1, round(w)), max(1, round(h))


def _svg_root_attributes(text: str) -> dict[str, str] | None:
    """The attributes of the first element, when it is <svg> (or <x:svg>),
    past the XML declaration, comments, processing instructions and a
    DOCTYPE (its internal subset skipped, not read)."""
    pos = 0
    while True:
        pos = _SPACE.match(text, pos).end()
        if text.startswith("<?", pos):
            pos = _past(text, "?>", pos + 2)
        elif text.startswith("<!--", pos):
            pos = _past(text, "-->", pos + 4)
        elif text.startswith("<!DOCTYPE", pos):
            pos = _past_doctype(text, pos + 9)
        else:
            break
        if pos < 0:
            return None
    root = _ROOT.match(text, pos)
    if root is None:
        return None
    attrs: dict[str, str] = {}
    pos = root.end()
    while not _TAG_END.match(text, pos):
        m = _ATTR.match(text, pos)
        if m is None or m[1] in attrs:
            return None  # not well formed, or the tag runs past the bytes read
        attrs[m[1]] = m[2] if m[2] is not None else m[3]
        pos = m.end()
    return attrs


def _past(text: str, end: str, pos: int) -> int:
    i = text.find(end, pos)
    return i + len(end) if i >= 0 else -1


def _past_doctype(text: str, pos: int) -> int:
    """Where a DOCTYPE ends: its `>`, past quoted strings and an internal
    subset in [...] (with its comments and processing instructions)."""
    subset = False
    while pos < len(text):
        c = text[pos]
        if c in "\"'":
            pos = _past(text, c, pos + 1)
        elif subset and text.startswith("<!--", pos):
            pos = _past(text, "-->", pos + 4)
        elif subset and text.startswith("<?", pos):
            pos = _past(text, "?>", pos + 2)
        elif c == ">" and not subset:
            return pos + 1
        else:
            subset = (subset or c == "[") and c != "]"
            pos += 1
        if pos < 0:
            return -1
    return -1


def _svg_length(value: str | None) -> float | None:
    """A width or height in px, or None: missing, not a number, not more
    than 0, or in a unit that depends on where it is shown (%, em, ex)."""
    m = _LENGTH.fullmatch(value) if value is not None else None
    scale = _SVG_UNITS.get(m[2].lower()) if m else None
    if scale is None:
        return None
    px = float(m[1]) * scale
    return px if px > 0 else None


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
