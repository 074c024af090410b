"""How an output extension becomes ffmpeg encoder and muxer flags, so that the
same recipe gives the same bytes: bit-exact muxing and coding (no encoder
version strings, no timestamps, no random stream ids), metadata dropped,
bit-exact scalers, and a fixed encoder thread count (x264 and libvpx decide
differently with a different number of threads, so the core count of the
machine must not leak into the output)."""

from __future__ import annotations

IMAGE_EXTS = ("png", "jpg", "jpeg", "webp")
VIDEO_EXTS = ("mp4", "webm", "gif")
AUDIO_EXTS = ("wav", "mp3", "flac", "ogg")

ENCODER_THREADS = "4"
SWS_FLAGS = "bicubic+accurate_rnd+full_chroma_int+bitexact"

BITEXACT = ["-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact",
            "-map_metadata", "-1", "-map_chapters", "-1"]

# A clip's frames keep their own times: ffmpeg would otherwise encode at the
# time base of the rate its first frames declare, dropping every frame of a
# variable-rate clip that falls between two ticks of it (an fps filter
# resamples instead, where a rate is asked for).
KEEP_FRAME_TIMES = ["-fps_mode:v", "vfr", "-enc_time_base:v", "demux"]

# 4:2:0 needs even sides, and at least 2: an odd side is rounded down by one
# pixel, a 1-pixel side (a 1x1 image, a 1-pixel crop) becomes 2.
EVEN_SIDES = f"scale=max(2\\,trunc(iw/2)*2):max(2\\,trunc(ih/2)*2):flags={SWS_FLAGS}"

_VIDEO_CODEC = {
    "mp4": ["-c:v", "libx264", "-preset", "medium", "-pix_fmt", "yuv420p", "-threads", ENCODER_THREADS],
    "webm": ["-c:v", "libvpx-vp9", "-pix_fmt", "yuv420p", "-b:v", "0", "-deadline", "good",
             "-cpu-used", "2", "-row-mt", "0", "-threads", ENCODER_THREADS],
    "gif": ["-c:v", "gif"],
}
_DEFAULT_CRF = {"mp4": 20, "webm": 32}
_IMAGE_CODEC = {
    "png": ["-c:v", "png", "-f", "image2", "-update", "1"],
    "jpg": ["-c:v", "mjpeg", "-q:v", "2", "-f", "image2", "-update", "1"],
    "jpeg": ["-c:v", "mjpeg", "-q:v", "2", "-f", "image2", "-update", "1"],
    "webp": ["-c:v", "libwebp", "-quality", "90", "-f", "webp"],
}
_AUDIO_CODEC = {
    "wav": ["-c:a", "pcm_s16le"],
    "mp3": ["-c:a", "libmp3lame", "-q:a", "2"],
    "flac": ["-c:a", "flac"],
    "ogg": ["-c:a", "libvorbis", "-q:a", "5"],
    # the audio track of a video container
    "mp4": ["-c:a", "aac", "-b:a", "192k"],
    "webm": ["-c:a", "libopus", "-b:a", "128k"],
}
_MUXER = {"mp4": "mp4", "webm": "webm", "gif": "gif", "wav": "wav", "mp3": "mp3", "flac": "flac", "ogg": "ogg"}


def kind_of(ext: str) -> str:
    return "image" if ext in IMAGE_EXTS else "video" if ext in VIDEO_EXTS else "audio"


def video_tail(ext: str) -> str:
    """Filters the container needs at the end of the video chain, or ''."""
    if ext == "gif":
        # A palette made from the clip itself, not gif's fixed 256 colours.
        return "split[tail_a][tail_b];[tail_a]palettegen=stats_mode=full[tail_p];[tail_b][tail_p]paletteuse"
    if ext == "mp4":  # x264 in 4:2:0
        return EVEN_SIDES
    return ""


def even(side: int) -> int:
    """A side as EVEN_SIDES makes it, for a size known before ffmpeg runs."""
    return max(2, side - side % 2)


def vf(ext: str, chain: list[str]) -> list[str]:
    """`-vf GRAPH` for a simple one-input chain plus what `ext` needs."""
    parts = [f for f in chain if f]
    if ext not in AUDIO_EXTS and video_tail(ext):
        parts.append(video_tail(ext))
    return ["-vf", f"sws_flags={SWS_FLAGS};" + ",".join(parts or ["null"])]


def complex_graph(ext: str, graph: str, label: str) -> tuple[list[str], str]:
    """`-filter_complex` for `graph`, whose video ends in [label]; returns the
    args and the label to map."""
    tail = video_tail(ext)
    if tail:
        graph += f";[{label}]{tail}[vout]"
        label = "vout"
    return ["-filter_complex", f"sws_flags={SWS_FLAGS};" + graph], f"[{label}]"


def output_args(ext: str, *, audio: bool = False, codec: str = "", crf: int | None = None,
                keep_times: bool = False) -> list[str]:
    """Codec, muxer and bit-exact flags for an output of type `ext`; `audio`
    asks a video container to carry an audio track (mapped by the caller);
    `keep_times` encodes each frame of a video at its own time (a clip made
    from a clip, not resampled to a rate)."""
    if ext in IMAGE_EXTS:
        args = ["-frames:v", "1", *_IMAGE_CODEC[ext], "-an"]
        if codec:
            args[args.index("-c:v") + 1] = codec
        return [*BITEXACT, *args]
    if ext in AUDIO_EXTS:
        args = ["-vn", *_AUDIO_CODEC[ext]]
        if codec:
            args[args.index("-c:a") + 1] = codec
        return [*BITEXACT, *args, "-f", _MUXER[ext]]
    args = list(_VIDEO_CODEC[ext])
    if codec:
        args[1] = codec
    if ext in _DEFAULT_CRF:
        args += ["-crf", str(_DEFAULT_CRF[ext] if crf is None or crf < 0 else crf)]
    if audio and ext in _AUDIO_CODEC:
        args += _AUDIO_CODEC[ext]
    else:
        args += ["-an"]
    if ext == "mp4":
        args += ["-movflags", "+faststart"]
    if keep_times:
        args += KEEP_FRAME_TIMES
    return [*BITEXACT, *args, "-f", _MUXER[ext]]


def copy_video_args(ext: str) -> list[str]:
    """Copy the video stream as it is, encode the sound for container `ext`."""
    extra = ["-movflags", "+faststart"] if ext == "mp4" else []
    return [*BITEXACT, "-c:v", "copy", *_AUDIO_CODEC[ext], *extra, "-f", _MUXER[ext]]


def require_output(path) -> None:
    """ffmpeg exits 0 when a filter selected nothing (a frame past the end):
    an empty or missing output is a failure, said here rather than later."""
    import os

    from lattice.errors import GeneratorFailed

    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        raise GeneratorFailed("ffmpeg finished but wrote no output",
                              hint="the input may hold fewer frames or less sound than asked for")


def run_into_output(ctx, args: list[str], duration: float | None, stage: str) -> None:
    """The ffmpeg step every built-in generator ends with: run `args`
    (writing ctx.output), insist on a non-empty output, report the end."""
    from lattice.ffmpeg import run_ffmpeg

    run_ffmpeg(args, progress=ctx.progress, duration=duration, timeout=ctx.timeout,
               on_process=ctx.on_process, stage=stage)
    require_output(ctx.output)
    ctx.progress(1.0, "finalizing")
