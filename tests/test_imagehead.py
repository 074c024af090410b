"""Still-image headers read in Python must agree with ffmpeg's probe."""

from __future__ import annotations

import subprocess

import msgspec

import pytest

from lattice.ffmpeg import _probe_ffmpeg, ffmpeg_exe, probe
from lattice.imagehead import image_header


@pytest.mark.parametrize("ext, extra", [("png", []), ("jpg", []), ("webp", []), ("webp", ["-lossless", "1"])])
@pytest.mark.parametrize("size", ["123x45", "16x300"])
def test_header_matches_ffmpeg(tmp_path, ext, extra, size):
    out = tmp_path / f"img.{ext}"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", f"testsrc=size={size}", "-frames:v", "1", *extra, str(out)], check=True)
    fast = probe(out)
    h = image_header(out, ext)
    assert h is not None and (h.frames, h.duration) == (1, None)
    assert fast == _probe_ffmpeg(out, "image", fast.size)


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0\x00", b"RIFF\0\0\0\0WEBPVP8X", b"garbage" * 20])
@pytest.mark.parametrize("ext", ["png", "jpg", "webp"])
def test_damaged_headers_fall_back(tmp_path, content, ext):
    out = tmp_path / f"bad.{ext}"
    out.write_bytes(content)
    assert image_header(out, ext) is None
    assert probe(out).kind == "image"  # never raises for damaged media


@pytest.mark.parametrize("orientation, turned", [(1, False), (3, False), (6, True), (8, True)])
def test_a_jpeg_turned_by_its_exif_orientation_records_the_size_ffmpeg_decodes(tmp_path, orientation, turned):
    """A phone's portrait photo is stored landscape with EXIF orientation 6:
    ffmpeg turns it as it decodes (every export is portrait), so the size
    recorded is the turned one."""
    import struct

    src = tmp_path / "a.jpg"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "testsrc=size=40x30", "-frames:v", "1", str(src)], check=True)
    tiff = b"MM\0\x2a" + struct.pack(">IH", 8, 1) + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + b"\0\0\0\0"
    app1 = b"Exif\0\0" + tiff
    data = src.read_bytes()
    src.write_bytes(data[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + data[2:])
    decoded = tmp_path / "decoded.png"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(src), "-frames:v", "1", str(decoded)], check=True)
    info = probe(src)
    assert (info.width, info.height) == (probe(decoded).width, probe(decoded).height) == ((30, 40) if turned else (40, 30))


def test_a_still_png_in_many_chunks_is_read_from_its_header_and_its_end(tmp_path):
    """A whole still PNG (IEND at its end, no acTL before its first IDAT)
    is taken at its header's word without walking its IDAT chunks: ffmpeg
    writes one per 4 KiB, and walking them cost a 4K picture 1.6 ms of
    `add`. More chunks than a walk reads (MAX_CHUNKS) no longer send it to
    ffmpeg."""
    import struct
    import zlib

    from lattice.imagehead import MAX_CHUNKS, image_header

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    pixels = zlib.compress(b"".join(b"\0" + bytes([x % 256, 0, 0] * 40) for x in range(30)))
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 40, 30, 8, 2, 0, 0, 0))
           + b"".join(chunk(b"IDAT", pixels[i:i + 1]) for i in range(len(pixels)))
           + chunk(b"IDAT", b"") * MAX_CHUNKS + chunk(b"IEND", b""))
    out = tmp_path / "many.png"
    out.write_bytes(png)
    h = image_header(out, "png")
    assert h is not None and (h.codec, h.width, h.height, h.frames, h.duration) == ("png", 40, 30, 1, None)
    assert probe(out) == _probe_ffmpeg(out, "image", len(png))
    # Cut short, the same picture is still left to ffmpeg.
    (tmp_path / "cut.png").write_bytes(png[:-12])
    assert image_header(tmp_path / "cut.png", "png") is None


# -- GIF: frames and delays walked in Python, as ffmpeg decodes them ----------------


def gif(*blocks, size=(4, 4)) -> bytes:
    """A GIF of `blocks`: an int is a Graphic Control Extension with that
    delay (1/100 s), "i" a 1x1 image, "c" a comment, ";" the trailer."""
    import struct

    image = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"  # LZW: clear, 0, end
    parts = {"i": image, "c": b"\x21\xfe\x02hi\x00", ";": b"\x3b"}
    out = b"GIF89a" + struct.pack("<HHBBB", *size, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    for b in blocks:
        out += b"\x21\xf9\x04\x00" + struct.pack("<H", b) + b"\0\0" if isinstance(b, int) else parts[b]
    return out


def ffmpeg_decodes(path) -> tuple[int, float]:
    """(frames, seconds) ffmpeg decodes from `path`: the frames its
    showinfo filter sees, and where the last one ends."""
    import re

    err = subprocess.run([ffmpeg_exe(), "-nostdin", "-hide_banner", "-i", str(path), "-vf", "showinfo", "-f", "null", "-"],
                         capture_output=True, text=True, check=True).stderr
    rows = re.findall(r"n: *\d+ pts: *(\d+) .*?pts_time:([\d.]+) .*?duration_time:([\d.]+)", err)
    return len(rows), round(float(rows[-1][1]) + float(rows[-1][2]), 6)


@pytest.mark.parametrize("rate, frames", [(10, 48), (24, 48), (30, 48), (60, 30), (7, 20)])
def test_an_animated_gif_records_the_frames_and_length_ffmpeg_decodes(tmp_path, rate, frames):
    """ffmpeg's banner gives a GIF's length and a rate rounded to its 1/100 s
    delays; frames were their product: 48 frames at 24 fps (delays of 4
    and 5) were recorded as 50, 30 at 60 fps as 50. Now each frame's delay
    is read from its Graphic Control Extension."""
    out = tmp_path / "a.gif"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", f"testsrc=size=64x48:rate={rate}",
                    "-frames:v", str(frames), str(out)], check=True)
    info = probe(out)
    assert (info.kind, info.codec, info.width, info.height, info.frames) == ("image", "gif", 64, 48, frames)
    assert (info.frames, info.duration) == ffmpeg_decodes(out)
    assert info.fps == round(frames / info.duration, 6)


@pytest.mark.parametrize("blocks", [
    (0, "i", 1, "i", 2, "i", 10, "i", 0, "i", ";"),  # 0 lasts 1/10 s, 1 lasts 1/100 s
    (5, "i", "i", 7, "i", "i", ";"),  # an image with no GCE of its own keeps the delay before
    ("i", "i", 5, "i", ";"),  # images before any extension are one packet: one frame
    ("c", "i", "i", ";"),  # after one, each image is a frame (1/10 s: no GCE yet)
    (5, "i", "c", 3, "i", "c", ";"),  # a comment after the last image is no frame
    (5, "i", 7, "i"),  # no trailer, but every block whole: ffmpeg decodes both
])
def test_gif_delays_follow_ffmpeg_decoding(tmp_path, blocks):
    out = tmp_path / "d.gif"
    out.write_bytes(gif(*blocks))
    info = probe(out)
    assert info.frames > 1 and (info.frames, info.duration) == ffmpeg_decodes(out)


def test_a_single_frame_gif_is_a_still_like_a_png(tmp_path):
    """One frame: recorded as a PNG still is (frames 1, no duration nor
    fps), not as a clip of 1/10 s."""
    made = {}
    for ext in ("gif", "png"):
        made[ext] = tmp_path / f"one.{ext}"
        subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "testsrc=size=32x24:rate=10", "-frames:v", "1",
                        str(made[ext])], check=True)
    facts = {ext: probe(path) for ext, path in made.items()}
    assert (facts["gif"].frames, facts["gif"].duration, facts["gif"].fps) == (1, None, None)
    assert msgspec.structs.replace(facts["gif"], codec="png", size=0) == msgspec.structs.replace(facts["png"], size=0)
    assert ffmpeg_decodes(made["gif"])[0] == 1
    (tmp_path / "one-delay.gif").write_bytes(gif(50, "i", ";"))
    assert probe(tmp_path / "one-delay.gif").duration is None


@pytest.mark.parametrize("damage", ["cut", "stray byte", "outside the screen", "GCE length", "after the trailer", "no image"])
def test_a_damaged_gif_is_left_to_ffmpeg(tmp_path, damage):
    """What the block walk cannot vouch for is probed by ffmpeg, as before:
    the banner's estimate, or no picture at all; never an exception."""
    whole = tmp_path / "whole.gif"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=10", "-frames:v", "10",
                    str(whole)], check=True)
    data = whole.read_bytes()
    bad = {
        "cut": data[: len(data) // 2],
        "stray byte": gif(5, "i") + b"\x00" + gif(5, "i", ";")[19:],
        "outside the screen": gif(5, "i", 5, "i", ";", size=(1, 1)).replace(b"\x2c\x00\x00", b"\x2c\x01\x00"),  # left 1
        "GCE length": gif(5, "i", ";").replace(b"\x21\xf9\x04", b"\x21\xf9\x03"),
        "after the trailer": gif(5, "i", ";") + gif(7, "i", ";")[19:],
        "no image": gif(5, ";"),
    }[damage]
    out = tmp_path / "bad.gif"
    out.write_bytes(bad)
    assert image_header(out, "gif") is None
    assert probe(out) == _probe_ffmpeg(out, "image", len(bad))


def test_a_gif_of_too_many_frames_or_blocks_is_left_to_ffmpeg(tmp_path):
    """The walk stops after MAX_GIF_FRAMES frames, or MAX_GIF_BLOCKS data
    sub-blocks, so a GIF of millions of tiny frames costs a fraction of a
    second before ffmpeg is asked."""
    import time

    from lattice.imagehead import MAX_GIF_BLOCKS, MAX_GIF_FRAMES

    many = tmp_path / "many.gif"
    head, frame = gif(), gif(2, "i")[19:]
    many.write_bytes(head + frame * (MAX_GIF_FRAMES + 1) + b";")
    long = tmp_path / "long.gif"  # one image whose data comes a byte per sub-block
    long.write_bytes(head + gif("i")[19:30] + b"\x01\x44" * (MAX_GIF_BLOCKS + 1) + b"\x00;")
    for path in (many, long):
        start = time.monotonic()
        assert image_header(path, "gif") is None
        assert time.monotonic() - start < 5
    fits = tmp_path / "fits.gif"
    fits.write_bytes(head + frame * 1000 + b";")
    h = image_header(fits, "gif")
    assert h is not None and (h.frames, h.duration) == (1000, 20.0)


# -- SVG: the root element's size, read without an XML parser -----------------------


@pytest.mark.parametrize("text, size", [
    ('<svg xmlns="http://www.w3.org/2000/svg" width="8" height="6"/>', (8, 6)),
    ("<?xml version='1.0'?>\n<!-- a logo -->\n<svg width='120px' height=\"80.4px\" viewBox='0 0 1 1'>", (120, 80)),
    ('<svg viewBox="0,0,300.5,150">', (300, 150)),
    ('<svg width="100%" height="100%" viewBox="0 0 64 32">', (64, 32)),  # relative units: the viewBox
    ('<svg width="10em" height="5em" viewBox="-5 -5 40 20">', (40, 20)),
    ('<svg width="200" viewBox="0 0 100 50">', (200, 100)),  # one side: the other from the viewBox's shape
    ('<svg width="210mm" height="297mm">', (794, 1123)),  # 96 px to the inch
    ('<svg width="1in" height="72pt">', (96, 96)),
    ('<svg:svg xmlns:svg="http://www.w3.org/2000/svg" width="5" height="7"/>', (5, 7)),
    ('\ufeff<svg width="0.2" height="3">', (1, 3)),
    # The DOCTYPE's internal subset is skipped, never read: &w; stays unexpanded, so no width.
    ('<!DOCTYPE svg [ <!ENTITY w "999"> <!-- a ] or > here --> ]>\n<svg width="&w;" height="40" viewBox="0 0 30 20">',
     (60, 40)),
    # No size: relative units and no viewBox, a root that is not <svg>, a start tag not well formed or cut short
    ('<svg width="100%" height="100%">', None),
    ('<html><svg width="5" height="5"/></html>', None),
    ('<svgx width="5" height="5">', None),
    ('<svg width=5 height=5>', None),
    ('<svg width="5" width="6" height="5">', None),
    ('<svg width="5" height="5"', None),
    ('<svg width="-5" height="nan" viewBox="0 0 0 10">', None),
    ('<svg width="1e400" height="5">', None),
    ('<svg viewBox="0 0 1e300 1e300">', None),
    ("", None),
])
def test_svg_size_from_the_root_element(tmp_path, text, size):
    out = tmp_path / "a.svg"
    out.write_text(text, encoding="utf-8")
    info = probe(out)
    assert (info.kind, info.width, info.height) == ("vector", *(size or (None, None)))


def test_svg_size_is_read_from_a_bounded_prefix(tmp_path):
    """Only the first SVG_HEAD bytes are read: a root element past them
    gives no size (and a file of any length costs the same)."""
    from lattice.imagehead import SVG_HEAD, svg_size

    (tmp_path / "late.svg").write_text("<!--" + "x" * SVG_HEAD + '--><svg width="9" height="4"/>')
    assert svg_size(tmp_path / "late.svg") is None
    (tmp_path / "utf16.svg").write_bytes('<svg width="9" height="4"/>'.encode("utf-16"))
    assert svg_size(tmp_path / "utf16.svg") == (9, 4)
