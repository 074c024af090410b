"""The ffmpeg binary that imageio-ffmpeg ships: run it safely, read its
progress, and probe what a media file holds.

Every call is an argv list (never a shell), reads only local files
(`-protocol_whitelist file`, inputs spelled `file:PATH`), and runs in its own
process group so a timeout or a cancel kills ffmpeg and everything it spawned.
imageio-ffmpeg ships no ffprobe, so `probe` reads the stream summary that
`ffmpeg -i FILE` prints without decoding anything.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any, Callable

import msgspec


class MediaInfo(msgspec.Struct, omit_defaults=True):
    kind: str
    size: int
    width: int | None = None
    height: int | None = None
    duration: float | None = None  # seconds
    fps: float | None = None
    frames: int | None = None
    codec: str | None = None
    audio_codec: str | None = None
    audio_channels: int | None = None
    sample_rate: int | None = None


@functools.cache
def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def file_url(path: Path | str) -> str:
    """`file:/abs/path`, so a name like `http:x` or `concat:a|b` stays a file."""
    return "file:" + os.path.abspath(path)


# Demuxers an input may be read with. Playlists (hls, concat lists, …) are
# left out: a file that names other files could pull any local file into an
# output. lavfi is the built-in sources' own input. Each image format that
# media.IMAGE names has its demuxer here: apng and webp_anim read animated
# PNG and WebP, exr_pipe and the netpbm pipes .exr and .ppm.
DEMUXERS = ("mov,matroska,avi,mpeg,mpegts,image2,png_pipe,jpeg_pipe,webp_pipe,gif,bmp_pipe,tiff_pipe,"
            "apng,webp_anim,exr_pipe,ppm_pipe,pgm_pipe,pbm_pipe,pam_pipe,wav,mp3,flac,ogg,aac,aiff,lavfi")


def _with_whitelist(args: list[str]) -> list[str]:
    # The whitelists are per-input options, so they go before every -i. lavfi
    # sources open no protocol and are unaffected by the protocol list.
    out: list[str] = []
    for a in args:
        if a == "-i":
            out += ["-protocol_whitelist", "file", "-format_whitelist", DEMUXERS]
        out.append(a)
    return out


def run_ffmpeg(
    args: list[str],
    *,
    progress: Callable[[float, str], None] | None = None,
    duration: float | None = None,
    timeout: float | None = None,
    on_process: Callable[[Any], None] | None = None,
    stage: str = "generating",
    on_frames: Callable[[int], None] | None = None,
) -> None:
    """Run ffmpeg with `args` (inputs, filters, outputs). `duration` (seconds of
    output expected) turns ffmpeg's out_time into a progress fraction;
    `on_frames` hears each count of frames written that ffmpeg reports (the
    last one also when ffmpeg then fails)."""
    from lattice.childproc import run_child

    def on_line(line: str) -> None:
        key, _, value = line.partition("=")
        if key == "out_time_us" and progress and duration and value.lstrip("-").isdigit():
            progress(min(max(int(value) / (duration * 1e6), 0.0), 1.0), stage)
        elif key == "frame" and on_frames and value.strip().isdigit():
            on_frames(int(value))

    argv = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-y", "-loglevel", "error",
            "-progress", "pipe:1", "-nostats", *_with_whitelist(args)]
    run_child(argv, name="ffmpeg", timeout=timeout, on_process=on_process,
              on_stdout_line=on_line if (progress and duration) or on_frames else None, summary="first")


# --- probe -------------------------------------------------------------------

_DURATION = re.compile(r"^\s*Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", re.M)
_STREAM = re.compile(r"^\s*Stream #\d+:\d+\S*: (Video|Audio): (.*)$", re.M)
_SIZE = re.compile(r"(?:^|[ ,])(\d{1,6})x(\d{1,6})(?:[ ,]|$)")
_FPS = re.compile(r"([\d.]+)(k?) (?:fps|tbr)\b")
_HZ = re.compile(r"(\d+) Hz")
_ROTATION = re.compile(r"rotation of (-?\d+(?:\.\d+)?) degrees", re.I)
# ffmpeg's named channel layouts; the rest are numbered ("5.1", "3.0(back)",
# "7.1(wide)", "5.1.2", "22.2"): their parts add up to the channels.
_LAYOUTS = {"mono": 1, "stereo": 2, "binaural": 2, "downmix": 2, "quad": 4, "quad(side)": 4, "hexagonal": 6,
            "octagonal": 8, "cube": 8, "hexadecagonal": 16}
_NUMBERED_LAYOUT = re.compile(r"(\d+(?:\.\d+){1,2})(?:\([\w-]+\))?")


def probe(path: Path | str) -> MediaInfo:
    """What `path` holds. Never raises for a damaged media file: what cannot
    be read is left out, and kind comes from the extension."""
    path = Path(path)
    info, kind, size = _probe_here(path)
    return info if info is not None else _probe_ffmpeg(path, kind, size)


def probe_many(paths: list[Path | str]) -> list[MediaInfo]:
    """probe() of each path. Those that need ffmpeg (video, audio, images
    whose header says too little) run as many at once as there are cores:
    each is a process of its own, and a thousand one after another take
    a quarter of a minute."""
    out: list[MediaInfo | None] = []
    waiting = []
    for path in paths:
        info, kind, size = _probe_here(Path(path))
        if info is None:
            waiting.append((len(out), Path(path), kind, size))
        out.append(info)
    if len(waiting) == 1:
        i, path, kind, size = waiting[0]
        out[i] = _probe_ffmpeg(path, kind, size)
    elif waiting:
        from concurrent.futures import ThreadPoolExecutor

        # Threads suffice: each waits on its ffmpeg process, not on Python.
        with ThreadPoolExecutor(min(len(waiting), os.cpu_count() or 1)) as pool:
            for (i, *_), info in zip(waiting, pool.map(lambda w: _probe_ffmpeg(*w[1:]), waiting)):
                out[i] = info
    return out  # type: ignore[return-value]


def _probe_here(path: Path) -> tuple[MediaInfo | None, str, int]:
    """(what can be known without ffmpeg, else None; the kind the extension
    says; the size)."""
    from lattice.media import extension, kind_of_extension

    size = path.stat().st_size
    ext = extension(path.name)
    kind = kind_of_extension(ext)
    if kind == "other":
        return MediaInfo(kind=kind, size=size), kind, size
    if ext == "svg":
        from lattice.imagehead import svg_size

        wh = svg_size(path)
        return MediaInfo(kind=kind, size=size, width=wh and wh[0], height=wh and wh[1]), kind, size
    if kind == "vector":
        return _probe_lottie(path, size), kind, size
    if kind == "image":
        from lattice.imagehead import image_header

        h = image_header(path, ext)
        if h is not None:
            fps = round(h.frames / h.duration, 6) if h.duration else None
            return MediaInfo(kind="image", size=size, width=h.width, height=h.height, duration=h.duration, fps=fps,
                             frames=h.frames, codec=h.codec), kind, size
    return None, kind, size


def _probe_ffmpeg(path: Path, kind: str, size: int) -> MediaInfo:
    import subprocess

    argv = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-protocol_whitelist", "file", "-format_whitelist", DEMUXERS, "-i", file_url(path)]
    try:
        # Exits 1 ("At least one output file must be specified") after printing
        # the stream summary; the summary is what is wanted.
        err = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=60).stderr
    except (OSError, subprocess.TimeoutExpired):
        return MediaInfo(kind=kind, size=size)
    return parse_ffmpeg_info(err.decode("utf-8", "replace"), kind, size)


def parse_ffmpeg_info(text: str, kind: str, size: int) -> MediaInfo:
    info = MediaInfo(kind=kind, size=size)
    m = _DURATION.search(text)
    if m:
        info.duration = int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])
    video = audio = None
    quarter_turn = False
    for m in _STREAM.finditer(text):
        # Cover art in an mp3 shows up as a video stream; it is not video.
        if m[1] == "Video" and video is None and "(attached pic)" not in m[2]:
            video = m[2]
            # A phone's portrait clip is stored landscape with a display matrix
            # that turns it; players and exports show it turned (ffmpeg autorotates).
            nxt = _STREAM.search(text, m.end())
            r = _ROTATION.search(text, m.end(), nxt.start() if nxt else len(text))
            quarter_turn = bool(r) and round(float(r[1])) % 180 == 90
        elif m[1] == "Audio" and audio is None:
            audio = m[2]
    if video:
        info.codec = video.split(",")[0].split()[0]
        s = _SIZE.search(video)
        if s:
            info.width, info.height = (int(s[2]), int(s[1])) if quarter_turn else (int(s[1]), int(s[2]))
        f = _FPS.search(video)
        if f:
            info.fps = float(f[1]) * (1000 if f[2] else 1)
    if audio:
        info.audio_codec = audio.split(",")[0].split()[0]
        hz = _HZ.search(audio)
        if hz:
            info.sample_rate = int(hz[1])
        parts = [p.strip() for p in audio.split(",")]
        for p in parts:
            numbered = _NUMBERED_LAYOUT.fullmatch(p)
            if p in _LAYOUTS:
                info.audio_channels = _LAYOUTS[p]
            elif numbered:
                info.audio_channels = sum(int(n) for n in numbered[1].split("."))
            elif p.split(" channels")[0].isdigit() and " channels" in p:  # "6 channels (FL+FR+…)"
                info.audio_channels = int(p.split()[0])
    # Refine the extension's guess by what the streams say.
    if kind == "video" and not video and audio:
        info.kind = "audio"
    elif kind == "audio" and video:
        info.kind = "video"
    if info.kind == "audio":
        info.fps = info.codec = info.width = info.height = None
    elif info.kind == "image" and video:
        still = info.codec != "gif" and not (info.codec == "webp" and info.duration)
        if still:  # no size: a stream ffmpeg named by the extension but cannot decode, not one frame
            info.frames, info.duration, info.fps = (1 if info.width else None), None, None
    if info.kind in ("video", "image") and info.frames is None and info.duration and info.fps:
        info.frames = max(1, round(info.duration * info.fps))
    return info


def _probe_lottie(path: Path, size: int) -> MediaInfo:
    info = MediaInfo(kind="vector", size=size)
    try:
        data = _lottie_json(path)
        doc = msgspec.json.decode(data)
    except Exception:  # not Lottie (rig/pose JSON, damaged zip): kind and size only
        return info
    if not isinstance(doc, dict) or not {"w", "h", "fr", "ip", "op"} <= doc.keys():
        return info
    try:
        w, h, fr, ip, op = (float(doc[k]) for k in ("w", "h", "fr", "ip", "op"))
    except (TypeError, ValueError):
        return info
    info.width, info.height, info.codec = int(w), int(h), "lottie"
    if fr > 0:
        info.fps = fr
        info.frames = max(0, int(round(op - ip)))
        info.duration = info.frames / fr
    return info


def _lottie_json(path: Path) -> bytes:
    """The animation JSON: the file itself, or the first animation inside a
    dotLottie zip (`.lottie` files are usually zips)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head != b"PK\x03\x04":
        return path.read_bytes()
    import zipfile

    with zipfile.ZipFile(path) as z:
        names = sorted(n for n in z.namelist() if n.startswith("animations/") and n.endswith(".json"))
        if not names:
            raise ValueError("no animation in dotLottie")
        return z.read(names[0])
