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
