"""Still-image headers read in Python must agree with ffmpeg's probe."""

from __future__ import annotations

import subprocess

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
