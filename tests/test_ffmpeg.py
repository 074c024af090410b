"""lattice.ffmpeg against the real ffmpeg binary: probing, errors, progress,
timeouts that kill the whole process group."""

from __future__ import annotations

import json
import os
import time
import zipfile

import pytest

from lattice.errors import GeneratorFailed
from lattice.ffmpeg import MediaInfo, ffmpeg_exe, file_url, parse_ffmpeg_info, probe, probe_many, run_ffmpeg

BITEXACT = ["-fflags", "+bitexact", "-map_metadata", "-1"]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    src = ["-f", "lavfi", "-i", "testsrc=s=32x24:r=25:d=0.2"]
    tone = ["-f", "lavfi", "-i", "sine=f=440:r=44100:d=0.2"]
    run_ffmpeg([*src, "-frames:v", "1", "-update", "1", "-f", "image2", file_url(d / "a.png")])
    run_ffmpeg([*src, "-c:v", "libx264", "-pix_fmt", "yuv420p", *BITEXACT, "-f", "mp4", file_url(d / "a.mp4")])
    run_ffmpeg([*tone, *BITEXACT, "-f", "wav", file_url(d / "a.wav")])
    run_ffmpeg([*src, *tone, "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-ac", "2",
                *BITEXACT, "-f", "mp4", file_url(d / "av.mp4")])
    return d


def test_probe_png(media):
    info = probe(media / "a.png")
    assert (info.kind, info.width, info.height, info.frames, info.codec) == ("image", 32, 24, 1, "png")
    assert info.size == (media / "a.png").stat().st_size
    assert info.duration is None


def test_probe_mp4(media):
    info = probe(media / "a.mp4")
    assert (info.kind, info.width, info.height, info.codec, info.fps) == ("video", 32, 24, "h264", 25.0)
    assert info.duration == pytest.approx(0.2, abs=0.05)
    assert info.frames == 5
    assert info.audio_codec is None


def test_probe_mp4_with_sound(media):
    info = probe(media / "av.mp4")
    assert (info.kind, info.codec, info.audio_codec, info.audio_channels, info.sample_rate) == (
        "video", "h264", "aac", 2, 44100)


def test_probe_wav(media):
    info = probe(media / "a.wav")
    assert (info.kind, info.audio_codec, info.audio_channels, info.sample_rate) == ("audio", "pcm_s16le", 1, 44100)
    assert info.duration == pytest.approx(0.2, abs=0.01)
    assert info.width is None and info.codec is None


def test_probe_many_runs_ffmpeg_probes_together_and_keeps_order(media, tmp_path, monkeypatch):
    """Several ffmpeg probes at once, each result in its file's place, the
    same as probing one by one; files read in-process start no process."""
    import threading

    from lattice import ffmpeg

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    (tmp_path / "notes.txt").write_text("text")
    paths = [media / "a.wav", media / "a.png", media / "av.mp4", tmp_path / "notes.txt", broken, media / "a.mp4"]
    one_by_one = [probe(p) for p in paths]
    threads = set()
    real = ffmpeg._probe_ffmpeg
    monkeypatch.setattr(ffmpeg, "_probe_ffmpeg", lambda *a: threads.add(threading.get_ident()) or real(*a))
    assert probe_many(paths) == one_by_one
    assert probe_many([]) == []
    if (os.cpu_count() or 1) > 1:
        assert threading.get_ident() not in threads  # the four ffmpeg probes ran in the pool


def test_probe_lottie_json(tmp_path):
    p = tmp_path / "anim.json"
    p.write_text(json.dumps({"v": "5.7.0", "w": 512, "h": 256, "fr": 30, "ip": 0, "op": 90, "layers": []}))
    info = probe(p)
    assert info == MediaInfo(kind="vector", size=p.stat().st_size, width=512, height=256, fps=30.0,
                             frames=90, duration=3.0, codec="lottie")


def test_probe_dotlottie_zip(tmp_path):
    p = tmp_path / "anim.lottie"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("manifest.json", "{}")
        z.writestr("animations/a.json", json.dumps({"w": 10, "h": 20, "fr": 25, "ip": 5, "op": 30}))
    info = probe(p)
    assert (info.width, info.height, info.frames, info.duration, info.codec) == (10, 20, 25, 1.0, "lottie")


def test_probe_json_that_is_not_lottie(tmp_path):
    p = tmp_path / "rig.json"
    p.write_text('{"bones": []}')
    assert probe(p) == MediaInfo(kind="vector", size=p.stat().st_size)
    p.write_text("{not json")
    assert probe(p) == MediaInfo(kind="vector", size=p.stat().st_size)


def test_probe_other_runs_no_subprocess(tmp_path, monkeypatch):
    import subprocess

    def boom(*a, **k):
        raise AssertionError("no subprocess for a non-media file")

    monkeypatch.setattr(subprocess, "run", boom)
    monkeypatch.setattr(subprocess, "Popen", boom)
    p = tmp_path / "notes.txt"
    p.write_text("hello")
    assert probe(p) == MediaInfo(kind="other", size=5)
    assert msgspec_dict(probe(p)) == {"kind": "other", "size": 5}


def msgspec_dict(info):
    import msgspec

    return msgspec.to_builtins(info)


def test_probe_corrupt_media_does_not_raise(tmp_path):
    p = tmp_path / "broken.mp4"
    p.write_bytes(os.urandom(2000))
    assert probe(p) == MediaInfo(kind="video", size=2000)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    assert probe(empty) == MediaInfo(kind="image", size=0)


def test_probe_name_that_looks_like_a_protocol(media, tmp_path):
    # Without the file: prefix ffmpeg would read "concat:..." as a protocol.
    p = tmp_path / "concat:x.png"
    p.write_bytes((media / "a.png").read_bytes())
    assert probe(p).width == 32


def test_parse_refines_kind_and_skips_cover_art():
    mp3 = """Input #0, mp3, from 'x.mp3':
  Duration: 00:01:02.50, start: 0.025057, bitrate: 128 kb/s
  Stream #0:0: Audio: mp3 (mp3float), 44100 Hz, 5.1, fltp, 128 kb/s
  Stream #0:1: Video: mjpeg (Baseline), yuvj420p(pc), 500x500 [SAR 1:1 DAR 1:1], 90k tbr, 90k tbn (attached pic)
"""
    info = parse_ffmpeg_info(mp3, "audio", 10)
    assert (info.kind, info.duration, info.audio_channels, info.width) == ("audio", 62.5, 6, None)
    audio_in_mp4 = "  Duration: 00:00:01.00, start: 0.0\n  Stream #0:0[0x1](und): Audio: aac (LC), 48000 Hz, stereo, fltp\n"
    assert parse_ffmpeg_info(audio_in_mp4, "video", 1).kind == "audio"


def test_run_ffmpeg_failure_carries_stderr_tail(tmp_path):
    with pytest.raises(GeneratorFailed) as e:
        run_ffmpeg(["-i", file_url(tmp_path / "missing.mp4"), "-f", "null", "-"])
    assert "No such file or directory" in e.value.message
    assert e.value.message.startswith("ffmpeg failed")
    assert "missing.mp4" in (e.value.hint or "")


def test_an_encoder_that_fails_is_not_taken_for_a_killed_ffmpeg(tmp_path):
    """ffmpeg exits with the low byte of its error code: a failed encoder
    (AVERROR_EXTERNAL) gives 187, what a shell would report for a child
    killed by signal 59. The same run fails the same way: not transient."""
    with pytest.raises(GeneratorFailed) as e:
        run_ffmpeg(["-f", "lavfi", "-i", "testsrc=size=33x17:duration=0.1", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                    "-f", "mp4", file_url(tmp_path / "odd.mp4")])
    assert "exit status 187" in e.value.message and e.value.transient is False


def test_run_ffmpeg_refuses_network_protocols(tmp_path):
    with pytest.raises(GeneratorFailed) as e:
        run_ffmpeg(["-i", "http://127.0.0.1:9/x.mp4", "-f", "null", "-"])
    assert "whitelist" in e.value.message


def test_run_ffmpeg_reports_progress_and_process(tmp_path):
    seen, procs = [], []
    run_ffmpeg(["-f", "lavfi", "-i", "testsrc=s=32x24:r=25:d=1", "-f", "null", "-"],
               progress=lambda f, s: seen.append((f, s)), duration=1.0, on_process=procs.append, stage="encoding")
    assert procs and procs[0].returncode == 0
    assert seen and all(s == "encoding" and 0 <= f <= 1 for f, s in seen)
    assert seen[-1][0] == pytest.approx(1.0, abs=0.05)


def test_run_ffmpeg_timeout_kills_the_process_group():
    procs = []
    start = time.monotonic()
    with pytest.raises(GeneratorFailed, match=r"ffmpeg timed out after 0.5 s"):
        run_ffmpeg(["-re", "-f", "lavfi", "-i", "testsrc=s=32x24", "-f", "null", "-"],
                   timeout=0.5, on_process=procs.append)
    assert time.monotonic() - start < 10
    (proc,) = procs
    assert proc.returncode is not None
    deadline = time.monotonic() + 3  # killed at once; a big process takes a moment to exit
    while running_in_group(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert running_in_group(proc.pid) == []  # nothing is left running in its group


def running_in_group(pgid: int) -> list[int]:
    """The live processes of group `pgid`. A zombie is dead: a killed
    process that its parent died with (the guard lattice.childguard) is
    reaped by init, maybe a moment later."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                state, _, group = f.read().rpartition(")")[2].split()[:3]
        except (FileNotFoundError, ProcessLookupError):  # gone meanwhile
            continue
        if int(group) == pgid and state != "Z":
            found.append(int(pid))
    return found


def test_ffmpeg_exe_is_cached():
    assert ffmpeg_exe() is ffmpeg_exe()
    assert os.access(ffmpeg_exe(), os.X_OK)


def test_an_image_ffmpeg_cannot_decode_is_not_one_frame(tmp_path):
    """Text named .png: ffmpeg names a png stream by the extension, with no
    size; that is no frame, so the probe records no frame count."""
    from lattice.ffmpeg import probe

    bad = tmp_path / "g.png"
    bad.write_text("not a png at all")
    info = probe(bad)
    assert info.kind == "image" and info.width is None and info.frames is None


def test_a_clip_turned_a_quarter_by_its_display_matrix_records_its_shown_size(media, tmp_path):
    """A phone's portrait clip is stored landscape and turned on display:
    ffmpeg (exports, filters) shows it turned, so its size is recorded turned."""
    out = tmp_path / "turned.mp4"
    run_ffmpeg(["-display_rotation", "90", "-i", file_url(media / "a.mp4"), "-c", "copy", "-f", "mp4", file_url(out)])
    info = probe(out)
    assert (info.width, info.height) == (24, 32)
    assert (probe(media / "a.mp4").width, probe(media / "a.mp4").height) == (32, 24)
    half = "Stream #0:0: Video: h264, yuv420p, 32x24, 25 fps, 25 tbr\n    Side data:\n      displaymatrix: rotation of -180.00 degrees\n"
    assert (parse_ffmpeg_info(half, "video", 1).width, parse_ffmpeg_info(half, "video", 1).height) == (32, 24)


@pytest.mark.parametrize("layout, ext, channels", [("5.1(side)", "wav", 6), ("3.0", "ogg", 3), ("7.1(wide)", "flac", 8),
                                                    ("hexagonal", "wav", 6), ("22.2", "wav", 24)])
def test_every_channel_layout_gives_its_channel_count(tmp_path, layout, ext, channels):
    """Only nine layout names were known: a 5.1(side) FLAC or a 3.0 Ogg
    recorded no channel count at all."""
    out = tmp_path / f"a.{ext}"
    run_ffmpeg(["-f", "lavfi", "-i", "sine=d=0.1", "-af", f"aformat=channel_layouts={layout}", file_url(out)])
    assert probe(out).audio_channels == channels
