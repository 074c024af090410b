"""Derivations: generators that make a new asset from input assets through
ffmpeg (thumbnail, resize, crop, frame, transcode, concat, mux). Inputs are
probed first so a bad request (a crop outside the frame, a frame past the
end, a sound where a picture is needed) fails with a clear error before
ffmpeg runs."""

from __future__ import annotations

import re
from pathlib import Path

from lattice.errors import InvalidInput
from lattice.generators.base import Generator, Param, RunContext
from lattice.generators.encode import (
    AUDIO_EXTS, IMAGE_EXTS, SWS_FLAGS, VIDEO_EXTS, complex_graph, copy_video_args, even, kind_of, output_args,
    run_into_output, vf,
)

_CODEC_NAME = re.compile(r"^[A-Za-z0-9_.-]{0,40}$")


class Derivation(Generator):
    min_inputs = max_inputs = 1
    uses_seed = False  # a media operation: the output is its inputs' and params' alone
    stage = "encoding"

    def prepare(self, ctx: RunContext):
        """(params, output extension, probe of each input)."""
        from lattice.ffmpeg import probe
        from lattice.media import extension

        ext = extension(ctx.output.name)
        self.check_output(ext)
        self.check_inputs(len(ctx.inputs))
        p = self.normalize(ctx.params)
        ctx.output.parent.mkdir(parents=True, exist_ok=True)
        ctx.progress(0.0, "preparing")
        infos = [probe(path) for path in ctx.inputs]
        # Again on the probe: `gen` checked recorded facts, a queued job may not have.
        self.check_media(p, ext, [(ctx.input_name(i), info) for i, info in enumerate(infos)])
        return p, ext, infos

    def ffmpeg(self, ctx: RunContext, args: list[str], duration: float | None) -> None:
        run_into_output(ctx, args, duration, self.stage)


def _inp(path: Path) -> list[str]:
    from lattice.ffmpeg import file_url

    return ["-i", file_url(path)]


def _out(ctx: RunContext) -> str:
    from lattice.ffmpeg import file_url

    return file_url(ctx.output)


def _need_picture(info, i: int, name: str) -> None:
    # An SVG or Lottie file has a size, but no picture ffmpeg can decode.
    if not info.width or info.kind == "vector":
        raise InvalidInput(f"input {i} ({name}) has no picture ffmpeg can read",
                           hint="give an image or video asset")


def _scale(w: int | str, h: int | str) -> str:
    return f"scale={w}:{h}:flags={SWS_FLAGS}"


class Thumbnail(Derivation):
    id = "ffmpeg.thumbnail"
    kinds = ("image",)
    extensions = IMAGE_EXTS
    description = "a still that fits in SIZE x SIZE, from an image or a representative video frame"
    params = (Param("size", "int", 256, "longest side in pixels (never enlarged)", min=8, max=8192),)

    def check_media(self, params, extension, inputs):
        _need_picture(inputs[0][1], 0, inputs[0][0])

    def run(self, ctx):
        p, ext, (info,) = self.prepare(ctx)
        s = p["size"]
        chain = [f"thumbnail=n={min(100, info.frames)}" if (info.frames or 1) > 1 else "",
                 f"scale=w='min(iw,{s})':h='min(ih,{s})':force_original_aspect_ratio=decrease:flags={SWS_FLAGS}"]
        self.ffmpeg(ctx, [*_inp(ctx.inputs[0]), *vf(ext, chain), *output_args(ext), _out(ctx)], None)


def _keep_audio(info, ext: str) -> list[str]:
    """Maps for a picture-to-picture derivation: the first video stream, and
    the first audio stream when both input and output carry sound."""
    if ext in ("mp4", "webm") and info.audio_codec:
        return ["-map", "0:v:0", "-map", "0:a:0"]
    return ["-map", "0:v:0"]


# Version 2 of resize, crop, transcode, concat and mux: every frame of a
# variable-rate clip keeps its time (version 1 encoded at the rate its first
# frames declared and dropped the frames between its ticks), and a 1-pixel
# side becomes 2 in mp4 (version 1 rounded it to 0 and ffmpeg failed).


class Resize(Derivation):
    id = "ffmpeg.resize"
    version = "2"
    kinds = ("image", "video")
    extensions = IMAGE_EXTS + VIDEO_EXTS
    description = "scale an image or video; a side of 0 keeps the aspect ratio"
    params = (
        Param("width", "int", 0, "new width (0: from height and aspect)", min=0, max=16384),
        Param("height", "int", 0, "new height (0: from width and aspect)", min=0, max=16384),
    )

    def check_media(self, params, extension, inputs):
        _need_picture(inputs[0][1], 0, inputs[0][0])

    def run(self, ctx):
        p, ext, (info,) = self.prepare(ctx)
        if not p["width"] and not p["height"]:
            raise InvalidInput("ffmpeg.resize needs width or height", hint="e.g. --set width=640")
        auto = "-2" if ext == "mp4" else "-1"
        w, h = p["width"] or auto, p["height"] or auto
        args = [*_inp(ctx.inputs[0]), *_keep_audio(info, ext), *vf(ext, [_scale(w, h), "setsar=1"]),
                *output_args(ext, audio=bool(info.audio_codec), keep_times=True), _out(ctx)]
        self.ffmpeg(ctx, args, info.duration)


class Crop(Derivation):
    id = "ffmpeg.crop"
    version = "2"  # and the box is cut where asked in a 4:2:0 clip (version 1 rounded an odd edge or side down)
    kinds = ("image", "video")
    extensions = IMAGE_EXTS + VIDEO_EXTS
    description = "cut a rectangle out of an image or video"
    params = (
        Param("x", "int", 0, "left edge", min=0, max=65535),
        Param("y", "int", 0, "top edge", min=0, max=65535),
        Param("width", "int", 0, "width (0: to the right edge)", min=0, max=65535),
        Param("height", "int", 0, "height (0: to the bottom edge)", min=0, max=65535),
    )

    @staticmethod
    def box(p, info) -> tuple[int, int, int, int]:
        x, y = p["x"], p["y"]
        return x, y, p["width"] or info.width - x, p["height"] or info.height - y

    def check_media(self, params, extension, inputs):
        name, info = inputs[0]
        _need_picture(info, 0, name)
        x, y, w, h = self.box(params, info)
        if w <= 0 or h <= 0 or x + w > info.width or y + h > info.height:
            raise InvalidInput(
                f"crop {w}x{h}+{x}+{y} does not fit in the {info.width}x{info.height} input ({name})",
                hint="keep x+width and y+height inside the frame",
            )

    def run(self, ctx):
        p, ext, (info,) = self.prepare(ctx)
        x, y, w, h = self.box(p, info)
        # exact: ffmpeg would round an odd edge or side of a 4:2:0 picture down to even
        args = [*_inp(ctx.inputs[0]), *_keep_audio(info, ext), *vf(ext, [f"crop={w}:{h}:{x}:{y}:exact=1"]),
                *output_args(ext, audio=bool(info.audio_codec), keep_times=True), _out(ctx)]
        self.ffmpeg(ctx, args, info.duration)


class Frame(Derivation):
    id = "ffmpeg.frame"
    kinds = ("image",)
    extensions = IMAGE_EXTS
    description = "frame N (from 0) of a video, as an image"
    params = (Param("index", "int", 0, "frame number, from 0", min=0, max=10**8),)

    def check_media(self, params, extension, inputs):
        name, info = inputs[0]
        _need_picture(info, 0, name)
        n = params["index"]
        if info.frames is not None and n >= info.frames:
            raise InvalidInput(f"{name} has {info.frames} frames; there is no frame {n}",
                               hint=f"frames are numbered 0 to {info.frames - 1}")

    def run(self, ctx):
        p, ext, (info,) = self.prepare(ctx)
        n = p["index"]
        args = [*_inp(ctx.inputs[0]), *vf(ext, [f"select='eq(n,{n})'"]), *output_args(ext), _out(ctx)]
        self.ffmpeg(ctx, args, None)


class Transcode(Derivation):
    id = "ffmpeg.transcode"
    version = "2"
    kinds = ("image", "video", "audio")
    extensions = IMAGE_EXTS + VIDEO_EXTS + AUDIO_EXTS
    description = "re-encode into the output's format (mp4, webm, gif, png, wav, mp3…)"
    params = (
        Param("codec", "str", "", "encoder to use instead of the format's default (e.g. libx265)"),
        Param("crf", "int", -1, "quality for mp4/webm, lower is better (-1: the format's default)", min=-1, max=63),
    )

    def check_media(self, params, extension, inputs):
        name, info = inputs[0]
        if kind_of(extension) == "audio" and not info.audio_codec:
            raise InvalidInput(f"{name} has no sound to make a .{extension} from")
        if kind_of(extension) != "audio" and (not info.width or info.kind == "vector"):
            raise InvalidInput(f"{name} has no picture to make a .{extension} from")

    def run(self, ctx):
        p, ext, (info,) = self.prepare(ctx)
        if not _CODEC_NAME.match(p["codec"]):
            raise InvalidInput(f"parameter 'codec' must be an encoder name; got {p['codec']!r}",
                               hint="`ffmpeg -encoders` lists them")
        out_kind = kind_of(ext)
        if out_kind == "audio":
            maps, chain = ["-map", "0:a:0"], []
        else:
            maps, chain = _keep_audio(info, ext), vf(ext, [])
        codec_args = output_args(ext, audio=bool(info.audio_codec), codec=p["codec"], crf=p["crf"], keep_times=True)
        self.ffmpeg(ctx, [*_inp(ctx.inputs[0]), *maps, *chain, *codec_args, _out(ctx)], info.duration)


class Concat(Derivation):
    id = "ffmpeg.concat"
    version = "2"  # and fps=0 keeps each frame's time (version 1 resampled every clip to the first one's mean rate)
    kinds = ("video",)
    extensions = VIDEO_EXTS
    min_inputs, max_inputs = 2, 64
    description = "join clips end to end, in order, scaled and padded to one size"
    params = (
        Param("width", "int", 0, "output width (0: the first clip's)", min=0, max=16384),
        Param("height", "int", 0, "output height (0: the first clip's)", min=0, max=16384),
        Param("fps", "float", 0.0, "output frame rate (0: every frame keeps its own time)", min=0, max=240),
    )

    def check_media(self, params, extension, inputs):
        for i, (name, info) in enumerate(inputs):
            _need_picture(info, i, name)

    def run(self, ctx):
        p, ext, infos = self.prepare(ctx)
        first = infos[0]
        w, h = p["width"] or first.width, p["height"] or first.height
        if ext == "mp4":
            w, h = even(w), even(h)
        # pad rounds an odd side of a 4:2:0 picture down, below the scaled one: pad those in 4:4:4
        full = ",format=yuv444p" if w % 2 or h % 2 else ""
        rate = f"fps={p['fps']!r}," if p["fps"] else ""
        sound = ext in ("mp4", "webm") and all(i.audio_codec for i in infos)
        parts, labels = [], ""
        for i in range(len(infos)):
            parts.append(f"[{i}:v:0]scale={w}:{h}:force_original_aspect_ratio=decrease:flags={SWS_FLAGS}{full},"
                         f"pad={w}:{h}:(ow-iw)/2:(oh-ih)/2,setsar=1,{rate}format=yuv420p[v{i}]")
            labels += f"[v{i}]"
            if sound:
                parts.append(f"[{i}:a:0]aformat=sample_rates=48000:channel_layouts=stereo[a{i}]")
                labels += f"[a{i}]"
        parts.append(f"{labels}concat=n={len(infos)}:v=1:a={int(sound)}[v]" + ("[a]" if sound else ""))
        graph, vlabel = complex_graph(ext, ";".join(parts), "v")
        inputs = [a for path in ctx.inputs for a in _inp(path)]
        maps = ["-map", vlabel] + (["-map", "[a]"] if sound else [])
        total = sum(i.duration or 0 for i in infos) or None
        enc = output_args(ext, audio=sound, keep_times=not p["fps"])
        self.ffmpeg(ctx, [*inputs, *graph, *maps, *enc, _out(ctx)], total)


class Mux(Derivation):
    id = "ffmpeg.mux"
    version = "2"
    kinds = ("video",)
    extensions = ("mp4", "webm")
    min_inputs = max_inputs = 2
    description = "put a sound (input 1) under a video (input 0)"
    params = (Param("shortest", "bool", True, "end with the shorter of picture and sound"),)

    # A video stream already in the container's codec is copied, not re-encoded.
    _COPY = {"mp4": ("h264", "hevc"), "webm": ("vp9", "vp8", "av1")}

    def check_media(self, params, extension, inputs):
        _need_picture(inputs[0][1], 0, inputs[0][0])
        if not inputs[1][1].audio_codec:
            raise InvalidInput(f"input 1 ({inputs[1][0]}) has no sound", hint="give an audio asset second")

    def run(self, ctx):
        p, ext, (video, audio) = self.prepare(ctx)
        args = [*_inp(ctx.inputs[0]), *_inp(ctx.inputs[1]), "-map", "0:v:0", "-map", "1:a:0"]
        if video.codec in self._COPY[ext]:
            enc = copy_video_args(ext)
        else:
            enc = output_args(ext, audio=True, keep_times=True)
            args += vf(ext, [])
        if p["shortest"]:
            args.append("-shortest")
        durations = [d for d in (video.duration, audio.duration) if d]
        total = (min(durations) if p["shortest"] else max(durations)) if durations else None
        self.ffmpeg(ctx, [*args, *enc, _out(ctx)], total)


DERIVATIONS = (Thumbnail, Resize, Crop, Frame, Transcode, Concat, Mux)
