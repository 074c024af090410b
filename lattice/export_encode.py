"""Encoding an export: the ffmpeg arguments of each format and quality
preset (listed in lattice.export's docstring and `lattice export --help`),
a Lottie document or dotLottie archive made from a still or checked as is,
and the recipe written into a PNG's text chunk. lattice.export decides what
is exported, where, and records it."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable

from lattice.errors import GeneratorFailed, InvalidInput
from lattice.export import EMBEDS, FORMATS, PRESETS, STILL_SECONDS, number


def encode(src: Path, out: Path, p: dict[str, Any], *, progress: Callable[[float, str], None] | None = None,
           timeout: float | None = None, on_process=None) -> bool:
    """Encode `src` into `out` (a directory for frames). Returns whether the
    recipe was embedded in the file."""
    from lattice.ffmpeg import run_ffmpeg

    fmt = p["format"]
    progress = progress or (lambda f, s: None)
    progress(0.0, "encoding")
    if FORMATS[fmt][1] == "lottie":
        return _lottie(src, out, p, timeout, on_process)
    args, duration = ffmpeg_args(src, out, p)
    frames: list[int] = []
    try:
        run_ffmpeg(args, progress=progress, duration=duration, timeout=timeout, on_process=on_process, stage="encoding",
                   on_frames=frames.append)
    except GeneratorFailed:
        _check_some_frame(p, frames)  # a gif of no frame fails writing its trailer: say why
        raise
    _check_some_frame(p, frames)
    if fmt == "png" and p["embed"]:
        out.write_bytes(png_with_text(out.read_bytes(), "lattice", p["embed"]))
    progress(1.0, "finalizing")
    return fmt in EMBEDS and bool(p["embed"])


def _check_some_frame(p: dict[str, Any], frames: list[int]) -> None:
    """A --range of a clip that holds none of its frames (1.99-2 of a 25 fps
    clip: its last frame is at 1.96 s) encodes to a video, or a frames
    folder, with no picture: refused, never delivered."""
    if FORMATS[p["format"]][1] in ("video", "frames", "image") and p["source_kind"] == "video" \
            and p["end"] and frames and frames[-1] == 0:
        raise InvalidInput(f"the range {number(p['start'])}-{number(p['end'])} s holds no frame of the clip: nothing to export",
                           hint="export a --range that starts earlier or lasts longer")


def ffmpeg_args(src: Path, out: Path, p: dict[str, Any]) -> tuple[list[str], float | None]:
    """The ffmpeg arguments for an export, and the seconds of output expected."""
    from lattice.ffmpeg import file_url
    from lattice.generators.encode import BITEXACT, ENCODER_THREADS, EVEN_SIDES, KEEP_FRAME_TIMES, SWS_FLAGS
    from lattice.media import extension

    fmt, kind, q = p["format"], p["source_kind"], PRESETS[p["quality"]]
    what = FORMATS[fmt][1]
    span = p["end"] - p["start"] if p["end"] else None
    # A still ffmpeg cannot decode is a decode error on every loop: -xerror
    # makes the first one fatal, where ffmpeg would otherwise spin until the timeout.
    strict = ["-xerror"] if kind == "image" else []
    if kind == "image" and what in ("video", "frames"):
        span = span or STILL_SECONDS
        # A still GIF is read whole as one picture by image2: the gif demuxer has no -loop.
        gif = ["-f", "image2", "-pattern_type", "none", "-c:v", "gif"] if extension(src.name) == "gif" else []
        inp = [*strict, *gif, "-loop", "1", "-framerate", number(p["fps"] or 25), "-t", f"{span:.6f}", "-i", file_url(src)]
    else:
        inp = strict + (["-ss", f"{p['start']:.6f}"] if p["start"] else []) + (["-t", f"{span:.6f}"] if span else [])
        inp += ["-i", file_url(src)]
    chain = []
    if p["fps"] and what in ("video", "frames"):
        chain.append(f"fps={number(p['fps'])}")
    if p["width"]:
        chain.append(f"scale={p['width']}:{p['height']}:flags={SWS_FLAGS}")
    elif fmt in ("mp4", "webm"):  # 4:2:0 needs even sides, and at least 2 (a 1x1 image)
        chain.append(EVEN_SIDES)
    # A clip's frames keep their own times (--fps resamples instead).
    timing = KEEP_FRAME_TIMES if kind != "image" and not p["fps"] else []
    meta = ["-metadata", f"comment={p['embed']}"] if p["embed"] and fmt in EMBEDS else []
    if what == "audio":
        codec = ["-c:a", q["pcm"]] if fmt == "wav" else ["-c:a", "libmp3lame", "-b:a", q["mp3"]]
        return [*inp, "-map", "0:a:0", "-vn", *BITEXACT, *codec, *meta, "-f", fmt, file_url(out)], span
    if fmt == "gif":
        colors, dither = q["gif"]
        pre = ",".join(chain) + "," if chain else ""
        graph = f"{pre}split[a][b];[a]palettegen=max_colors={colors}:stats_mode=diff[p];[b][p]paletteuse=dither={dither}"
        return [*inp, "-vf", graph, *timing, *BITEXACT, "-f", "gif", file_url(out)], span
    vf = ["-vf", ",".join(chain)] if chain else []
    if what == "image":
        codec = {"png": ["-c:v", "png", "-compression_level", str(q["png"])],
                 "jpg": ["-c:v", "mjpeg", "-q:v", str(q["jpg"])],
                 "webp": ["-c:v", "libwebp", *q["webp"]]}[fmt]
        return [*inp, "-frames:v", "1", *vf, *BITEXACT, *codec, "-f", "image2", "-update", "1", file_url(out)], None
    if what == "frames":
        out.mkdir(parents=True, exist_ok=True)
        # A still is one frame, unless a --range or --fps asks for a clip of it.
        one = ["-frames:v", "1"] if kind == "image" and not p["fps"] and not p["end"] else []
        return [*inp, *vf, *timing, *one, *BITEXACT, "-c:v", "png", "-start_number", "1", "-f", "image2",
                file_url(out / "frame_%05d.png")], None if one else span
    if fmt == "mp4":
        preset, crf = q["x264"]
        codec = ["-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p",
                 "-threads", ENCODER_THREADS, "-c:a", "aac", "-b:a", q["aac"], "-movflags", "+faststart"]
    else:
        crf, deadline, cpu = q["vp9"]
        codec = ["-c:v", "libvpx-vp9", "-crf", str(crf), "-b:v", "0", "-deadline", deadline, "-cpu-used", str(cpu),
                 "-row-mt", "0", "-threads", ENCODER_THREADS, "-pix_fmt", "yuv420p", "-c:a", "libopus", "-b:a", q["opus"]]
    return [*inp, "-map", "0:v:0", "-map", "0:a:0?", *vf, *timing, *BITEXACT, *codec, *meta, "-f", fmt, file_url(out)], span


def _lottie(src: Path, out: Path, p: dict[str, Any], timeout, on_process) -> bool:
    import zipfile

    from lattice import lottie

    if p["source_kind"] == "vector":  # as is; a dotLottie is repacked when it was plain JSON, or unsound
        data = src.read_bytes()
        try:
            if p["format"] == "lottie":
                data = lottie.animation_json(data)
            elif data[:4] != b"PK\x03\x04" or lottie.check_file(data):
                data = lottie.dotlottie(lottie.animation_json(data))
        except (ValueError, KeyError, zipfile.BadZipFile) as e:
            raise GeneratorFailed(f"not a readable Lottie file: {e}") from None
        problems = lottie.check_file(data)
        if problems:  # never write a Lottie no player can open
            raise GeneratorFailed(f"the Lottie source is not sound: {problems[0]}",
                                  hint="fix the source's JSON (v, fr, ip, op, w, h, layers) and add it again")
        out.write_bytes(data)
        return False
    from lattice.ffmpeg import file_url, run_ffmpeg
    from lattice.generators.encode import BITEXACT, SWS_FLAGS

    png = out.with_name(out.name + ".frame.png")
    try:
        vf = ["-vf", f"scale={p['width']}:{p['height']}:flags={SWS_FLAGS}"] if p["width"] else []
        run_ffmpeg(["-xerror", "-i", file_url(src), "-frames:v", "1", *vf, *BITEXACT, "-c:v", "png", "-f", "image2",
                    "-update", "1", file_url(png)], timeout=timeout, on_process=on_process)
        data = png.read_bytes()
    finally:
        with contextlib.suppress(FileNotFoundError):
            png.unlink()
    w, h = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")  # IHDR
    fps = p["fps"] or 30.0
    frames = max(1, round((p["end"] - p["start"] if p["end"] else STILL_SECONDS) * fps))
    doc = lottie.dumps(lottie.image_animation(data, w, h, fps, frames, p["embed"]))
    out.write_bytes(doc if p["format"] == "lottie" else lottie.dotlottie(doc, p["embed"]))
    return bool(p["embed"])


def png_with_text(png: bytes, key: str, text: str) -> bytes:
    """`png` with an iTXt chunk (UTF-8 text) inserted after IHDR."""
    import struct
    import zlib

    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise GeneratorFailed("ffmpeg wrote no PNG")
    body = key.encode("latin-1") + b"\0\0\0\0\0" + text.encode()
    chunk = struct.pack(">I", len(body)) + b"iTXt" + body + struct.pack(">I", zlib.crc32(b"iTXt" + body))
    ihdr_end = 8 + 8 + int.from_bytes(png[8:12], "big") + 4
    return png[:ihdr_end] + chunk + png[ihdr_end:]


def png_text(png: bytes) -> dict[str, str]:
    """The iTXt/tEXt chunks of a PNG (for tests and `lattice show`-like tools)."""
    out, i = {}, 8
    while i + 8 <= len(png):
        n, kind = int.from_bytes(png[i:i + 4], "big"), png[i + 4:i + 8]
        body = png[i + 8:i + 8 + n]
        if kind in (b"tEXt", b"iTXt"):
            key, _, rest = body.partition(b"\0")
            out[key.decode("latin-1")] = (rest[4:] if kind == b"iTXt" else rest).decode("utf-8", "replace")
        i += 12 + n
    return out
