"""Still-image headers read in Python must agree with ffmpeg's probe."""

from __future__ import annotations

import subprocess

import pytest

from lattice.ffmpeg import _probe_ffmpeg, ffmpeg_exe, probe
from lattice.imagehead import still_image


@pytest.mark.parametrize("ext, extra", [("png", []), ("jpg", []), ("webp", []), ("webp", ["-lossless", "1"])])
@pytest.mark.parametrize("size", ["123x45", "16x300"])
def test_header_matches_ffmpeg(tmp_path, ext, extra, size):
    out = tmp_path / f"img.{ext}"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", f"testsrc=size={size}", "-frames:v", "1", *extra, str(out)], check=True)
    fast = probe(out)
    assert still_image(out, ext) is not None
    assert fast == _probe_ffmpeg(out, "image", fast.size)


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0\x00", b"RIFF\0\0\0\0WEBPVP8X", b"garbage" * 20])
@pytest.mark.parametrize("ext", ["png", "jpg", "webp"])
def test_damaged_headers_fall_back(tmp_path, content, ext):
    out = tmp_path / f"bad.{ext}"
    out.write_bytes(content)
    assert still_image(out, ext) is None
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
