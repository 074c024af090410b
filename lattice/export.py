"""`lattice export`: deliverables from an asset's effective version.

Formats and what each quality preset means (also in `lattice export --help`):

  mp4   H.264 (libx264) + AAC: CRF/preset draft 32/ultrafast, preview 26/veryfast,
        production 20/medium, master 16/slow; audio 96k/128k/192k/256k
  webm  VP9 (libvpx-vp9, constant quality) + Opus: CRF draft 40, preview 36,
        production 31, master 24; audio 64k/96k/128k/192k
  gif   a palette made from the clip: 64/128/256/256 colours, dither
        none/bayer/sierra2_4a/floyd_steinberg
  png jpg webp  one still (the first frame of --range): PNG zlib level 1/3/6/9,
        JPEG q 8/5/3/2, WebP quality 60/75/88/lossless
  frames  a numbered PNG sequence in a directory (frame_00001.png, …); of a
        still, one frame, unless --range or --fps asks for more
  wav mp3  audio: PCM 16-bit (24-bit for master); MP3 96k/128k/192k/320k
  lottie dotlottie  a Lottie asset as is; an image as a Lottie animation with
        the image embedded; video cannot become Lottie

The recipe travels with the file: PNG text chunk, MP4/WebM/MP3 `comment`
metadata, Lottie `meta`; other formats get a `<out>.lattice.json` sidecar,
which replaces only the sidecar of an earlier export of the same source.
How each format is encoded is lattice.export_encode's; where the file
goes, and the checks that keep a user's file from being overwritten, are
lattice.export_target's.
An export written inside the project becomes an asset whose recipe is
generator `lattice.export` with the source as input, so `lattice render`
re-makes it and gc may evict it like any output; a frames directory is not
an asset (its PNGs stay untracked, with the sidecar) and replaces only an
earlier frames export of the same source. Encoding is bit-exact
(see lattice.generators.encode), so a re-made export hashes the same.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from lattice.errors import GeneratorFailed, InvalidInput, command
from lattice.generators.base import Generator, Param, RunContext
from lattice.repo import Repository

# format -> (file extension, what it is)
FORMATS = {
    "mp4": ("mp4", "video"), "webm": ("webm", "video"), "gif": ("gif", "video"),
    "png": ("png", "image"), "jpg": ("jpg", "image"), "webp": ("webp", "image"),
    "frames": ("", "frames"), "wav": ("wav", "audio"), "mp3": ("mp3", "audio"),
    "lottie": ("json", "lottie"), "dotlottie": ("lottie", "lottie"),
}


def format_of_output(out: str) -> str | None:
    """The export format an output name asks for by its extension
    (`clip.mp4` → mp4, `anim.json` → lottie), or None."""
    from lattice.media import extension

    ext = extension(out)
    ext = "jpg" if ext == "jpeg" else ext
    return next((fmt for fmt, (e, _) in FORMATS.items() if e and e == ext), None)


QUALITIES = ("draft", "preview", "production", "master")
PRESETS: dict[str, dict[str, Any]] = {
    "draft": {"x264": ("ultrafast", 32), "vp9": (40, "realtime", 8), "gif": (64, "none"), "png": 1, "jpg": 8,
              "webp": ["-quality", "60"], "mp3": "96k", "aac": "96k", "opus": "64k", "pcm": "pcm_s16le"},
    "preview": {"x264": ("veryfast", 26), "vp9": (36, "good", 5), "gif": (128, "bayer"), "png": 3, "jpg": 5,
                "webp": ["-quality", "75"], "mp3": "128k", "aac": "128k", "opus": "96k", "pcm": "pcm_s16le"},
    "production": {"x264": ("medium", 20), "vp9": (31, "good", 2), "gif": (256, "sierra2_4a"), "png": 6, "jpg": 3,
                   "webp": ["-quality", "88"], "mp3": "192k", "aac": "192k", "opus": "128k", "pcm": "pcm_s16le"},
    "master": {"x264": ("slow", 16), "vp9": (24, "good", 1), "gif": (256, "floyd_steinberg"), "png": 9, "jpg": 2,
               "webp": ["-lossless", "1"], "mp3": "320k", "aac": "256k", "opus": "192k", "pcm": "pcm_s24le"},
}
# What each source kind can become.
ACCEPTS = {
    "video": {"mp4", "webm", "gif", "png", "jpg", "webp", "frames", "wav", "mp3"},
    "image": {"mp4", "webm", "gif", "png", "jpg", "webp", "frames", "lottie", "dotlottie"},
    "audio": {"wav", "mp3"},
    "vector": {"lottie", "dotlottie"},
}
EMBEDS = {"png", "mp4", "webm", "mp3"}  # formats whose file carries the recipe
STILL_SECONDS = 1.0  # length of a video or Lottie made from a still without --range
SIDECAR = ".lattice.json"
FFMPEG_MAX_AREA = (2**31 - 1) // 8  # ffmpeg refuses a picture with (w+128)*(h+128) this large (av_image_check_size)
NAME_MAX = 255  # bytes in one file name, on every common file system


# -- parsing options ---------------------------------------------------------------


def parse_dimensions(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d{1,5})\s*[xX×]\s*(\d{1,5})\s*", text or "")
    if not m or not (2 <= int(m[1]) <= 16384 and 2 <= int(m[2]) <= 16384):
        raise InvalidInput(f"--size {text!r}: expected WIDTHxHEIGHT, each 2 to 16384", hint="for example --size 1280x720")
    return int(m[1]), int(m[2])


def _seconds(text: str) -> float:
    parts = text.strip().removesuffix("s").split(":")
    if not 1 <= len(parts) <= 3 or not all(re.fullmatch(r"\d+(\.\d+)?", p) for p in parts):
        raise ValueError(text)
    total = 0.0
    for p in parts:
        total = total * 60 + float(p)
    return total


def parse_range(text: str) -> tuple[float, float]:
    """'START-END' in seconds or [HH:]MM:SS(.ms): '1.5-4', '0:01-0:03.5'."""
    try:
        start, end = (_seconds(t) for t in (text or "").split("-"))
    except ValueError:
        raise InvalidInput(f"--range {text!r}: expected START-END in seconds or [HH:]MM:SS",
                           hint="for example --range 1.5-4 or --range 0:01-0:03") from None
    if end <= start:
        raise InvalidInput(f"--range {text!r}: the end must come after the start", hint="give START-END with END after START, e.g. --range 1.5-4")
    return start, end


@dataclass
class ExportOptions:
    format: str | None  # None: from the output's extension (format_of_output)
    quality: str = "production"
    size: str | None = None
    fps: float | None = None
    range: str | None = None

    def params(self, source_kind: str) -> dict[str, Any]:
        """Checked, typed parameters for ExportGenerator."""
        if self.format not in FORMATS:
            from lattice.errors import closest

            raise InvalidInput(f"unknown export format {self.format!r}{closest(self.format, FORMATS)}",
                               hint=f"formats are: {', '.join(FORMATS)}")
        if self.quality not in QUALITIES:
            raise InvalidInput(f"unknown quality {self.quality!r}", hint=f"qualities are: {', '.join(QUALITIES)}")
        w, h = parse_dimensions(self.size) if self.size else (0, 0)
        if self.fps is not None and not 0 < self.fps <= 240:
            raise InvalidInput(f"--fps {self.fps:g}: expected a frame rate above 0 and at most 240", hint="e.g. --fps 24, or leave --fps out to keep the source's")
        start, end = parse_range(self.range) if self.range else (0.0, 0.0)
        # The rest is the generator's own check, which `gen` and `regen` pass through too.
        return ExportGenerator().normalize({"format": self.format, "quality": self.quality, "width": w, "height": h,
                                            "fps": float(self.fps or 0), "start": start, "end": end,
                                            "source_kind": source_kind, "embed": ""})


def source_kind(kind: str, media: dict) -> str:
    """An animated image (gif, animated webp) exports like a video."""
    return "video" if kind == "image" and (media or {}).get("duration") else kind


def check_compatible(name: str, kind: str, fmt: str) -> None:
    if fmt in ACCEPTS.get(kind, set()):
        return
    if kind == "video" and FORMATS.get(fmt, ("", ""))[1] == "lottie":
        raise InvalidInput(f"{name} is a video, which cannot become Lottie",
                           hint="export it as a video (`--format mp4`, webm or gif) or as frames (`--format frames`)")
    can = ", ".join(sorted(ACCEPTS.get(kind, ()))) or "none"
    raise InvalidInput(f"{name} is {kind}: it cannot be exported as {fmt}", hint=f"formats for {kind}: {can}")


def check_source(name: str, kind: str, media: dict | None, params: dict[str, Any]) -> None:
    """Refuse what the source cannot give: a format its kind cannot become,
    sound from a silent clip, a range that starts past its end."""
    fmt = params["format"]
    check_compatible(name, kind, fmt)
    if FORMATS[fmt][1] == "audio" and media and not media.get("audio_codec"):
        raise InvalidInput(f"{name} has no audio stream to export as {fmt}",
                           hint="export its picture instead (e.g. --format mp4 or png), or export an asset with sound")
    if kind in ("image", "video") and FORMATS[fmt][1] != "audio" and media and not media.get("width"):
        # ffmpeg would loop a still it cannot decode until the job timed out
        raise InvalidInput(f"{name} has no picture ffmpeg can read, so there is nothing to export as {fmt}",
                           hint=f"replace it with a readable {kind} and run {command('lattice add', name)}")
    w, h = (media or {}).get("width") or 0, (media or {}).get("height") or 0
    if kind in ("image", "video") and FORMATS[fmt][1] != "audio" and (w + 128) * (h + 128) >= FFMPEG_MAX_AREA:
        raise InvalidInput(f"{name} is {w}x{h}, larger than ffmpeg decodes (about 16000x16000 at most)",
                           hint=f"scale it down in the tool that made it and run {command('lattice add', name)}")
    if kind == "vector" and media is not None and (media.get("codec") != "lottie" or not media.get("frames")):
        # An SVG, rig or pose JSON, a damaged archive: copied out as is, it
        # would be a .json or .lottie no Lottie player can open.
        why = "has no frames (its op is not after its ip)" if media.get("codec") == "lottie" else \
            "is not a Lottie animation (a JSON object with v, fr, ip, op, w, h and layers, or a .lottie archive of one)"
        hint = (f"an SVG is not converted: use the file as it is ({command('lattice checkout', name)})"
                if name.lower().endswith(".svg") else
                f"export a sound Lottie file, or fix {name} and run {command('lattice add', name)}")
        raise InvalidInput(f"{name} {why}, so it cannot be exported as {fmt}", hint=hint)
    dur = (media or {}).get("duration")
    if params["end"] and dur and params["start"] >= dur and kind != "image":
        raise InvalidInput(f"the range {number(params['start'])}-{number(params['end'])} s starts after the end of {name} ({dur:g} s)",
                           hint=f"give a range within 0-{dur:g}, or leave --range out for all of it")


def fits_name(fmt: str, ext: str) -> bool:
    """Whether a file named .`ext` can hold format `fmt` (.jpeg holds jpg)."""
    want = FORMATS[fmt][0]
    return ext == want or (want == "jpg" and ext == "jpeg")


# -- the generator -------------------------------------------------------------------


class ExportGenerator(Generator):
    """Encodes its one input as a deliverable; how exports are recorded and re-made."""

    id = "lattice.export"
    # 2: a clip's frames keep their own times (version 1 dropped frames of a
    # variable-rate clip), and a 1-pixel side becomes 2 in mp4 and webm
    version = "2"
    kinds = ("image", "video", "audio", "vector")
    extensions = tuple(sorted({e for e, _ in FORMATS.values() if e}))
    min_inputs = max_inputs = 1
    uses_seed = False
    description = "an export of its input (lattice export)"
    params = (
        Param("format", "choice", "mp4", "output format (must suit the output's extension)", choices=tuple(FORMATS)),
        Param("quality", "choice", "production", "encoder preset", choices=QUALITIES),
        Param("width", "int", 0, "output width (0: the source's)", min=0, max=16384),
        Param("height", "int", 0, "output height (0: the source's)", min=0, max=16384),
        Param("fps", "float", 0.0, "frame rate (0: the source's)", min=0, max=240),
        Param("start", "float", 0.0, "start of the range in seconds", min=0),
        Param("end", "float", 0.0, "end of the range in seconds (0: the end)", min=0),
        Param("source_kind", "choice", "video", "what the input is", choices=("video", "image", "audio", "vector")),
        Param("embed", "str", "", "recipe JSON to embed where the format allows"),
    )

    def check(self, params: dict[str, Any]) -> None:
        """What ffmpeg would refuse only after running (or spin on forever):
        refused at `export`, `gen` and `regen` alike."""
        fmt, kind, w, h = params["format"], params["source_kind"], params["width"], params["height"]
        start, end, fps = params["start"], params["end"], params["fps"]
        what = FORMATS[fmt][1]
        if end and end <= start:
            raise InvalidInput(f"the range {number(start)}-{number(end)} s ends before it starts",
                               hint="give START-END with END after START, e.g. --range 1.5-4")
        if what == "audio" and (w or h or fps):
            raise InvalidInput(f"a size and a frame rate do not apply to {fmt} (audio)",
                               hint="leave --size and --fps out for an audio format (width, height and fps 0)")
        if kind == "vector" and (w or h or fps or end):
            raise InvalidInput("a Lottie asset exports as is: a size, frame rate and range do not apply",
                               hint="leave --size, --fps and --range out for a Lottie asset")
        # ffmpeg spins forever on a still looped for less than one frame, and a
        # clip cut that short encodes to nothing: refuse before any job runs.
        span = end - start if end else STILL_SECONDS if kind == "image" else 0
        rate = fps or (25 if kind == "image" else 0)
        if what in ("video", "frames") and span and rate and span * rate < 1 - 1e-9:
            raise InvalidInput(f"{rate:g} fps over {span:g} s gives no frame: an export needs at least one",
                               hint=f"raise --fps to at least {1 / span:.3g}, or export a longer --range")
        if kind == "image" and what == "image" and (fps or end or start):
            raise InvalidInput(f"a still image exported as {fmt} is one picture: a range and a frame rate do not apply",
                               hint="leave --range and --fps out (start, end and fps 0), or export a video format such as gif or mp4")
        if fmt in ("mp4", "webm") and (w % 2 or h % 2):
            raise InvalidInput(f"{w}x{h}: {fmt} needs even width and height",
                               hint="e.g. --size 1280x720 (width=1280, height=720), or 0 to keep the source's")

    def check_params(self, params: dict[str, Any], extension: str) -> None:
        ext = extension.lower().lstrip(".")
        if not fits_name(params["format"], ext):
            right = format_of_output("x." + ext)
            raise InvalidInput(f"a .{ext} name for format {params['format']}",
                               hint=f"set format={right} to match the name" if right else "name the output for its format")

    def check_media(self, params: dict[str, Any], extension: str, inputs: list) -> None:
        import msgspec

        name, info = inputs[0]
        media = msgspec.structs.asdict(info)
        kind = source_kind(info.kind, media)
        # `lattice export` sets it from the source; a `gen` that left it at
        # its default would encode a still as one frame, or loop a clip.
        if params["source_kind"] != kind:
            raise InvalidInput(f"{name} is {'an' if kind[0] in 'aeiou' else 'a'} {kind}, but source_kind is {params['source_kind']}",
                               hint=f"set source_kind={kind} ({command('lattice export', name)} sets it for you)")
        check_source(name, kind, media, params)

    def run(self, ctx: RunContext) -> None:
        from lattice.media import extension

        p = self.normalize(ctx.params)
        self.check_params(p, extension(ctx.output.name))
        from lattice.export_encode import encode

        encode(ctx.inputs[0], ctx.output, p, progress=ctx.progress, timeout=ctx.timeout, on_process=ctx.on_process)


def number(v: float) -> str:
    """A number of seconds or frames as ffmpeg and messages write it: 25, 29.97."""
    return str(int(v)) if float(v).is_integer() else repr(float(v))


# -- producing and recording ------------------------------------------------------------


def export_recipe(source: str, source_object: str, params: dict[str, Any]):
    from lattice.records import Recipe
    from lattice.recipe import recipe_key

    recipe = Recipe(generator=ExportGenerator.id, generator_version=ExportGenerator.version, seed=0,
                    params=ExportGenerator().normalize(params), inputs=[source], input_objects=[source_object])
    recipe.key = recipe_key(recipe)
    return recipe


# -- the command ------------------------------------------------------------------------------


@dataclass
class ExportResult:
    source: str
    version: int
    format: str
    quality: str
    output: str
    bytes: int
    asset: str | None = None  # recorded as this asset
    asset_version: int | None = None
    embedded: bool = False
    sidecar: str | None = None
    regenerated: list[str] | None = None


def carries_recipe(fmt: str, kind: str) -> bool:
    """Whether an export's own file holds its recipe; if not, a
    `<out>.lattice.json` sidecar does (outside the project, and for frames)."""
    return fmt in EMBEDS or (FORMATS[fmt][1] == "lottie" and kind != "vector")


def export(repo: Repository, name: str, options: ExportOptions, out: str | None, cwd: Path, *,
           regen: bool = True, force: bool = False, notify: Callable[[str], None] | None = None,
           on_poll: Callable[[list], None] | None = None) -> ExportResult:
    """Check everything, re-make an evicted source, then run one "export" job.
    `force`: replace an existing file outside the project that no export
    wrote, and a sidecar beside it that is not its earlier export's."""
    import msgspec

    from lattice.remake import ensure_present
    from lattice.pipeline import run_job

    record = repo.record(name)
    v = record.effective
    kind = source_kind(record.kind, v.media)
    if kind not in ACCEPTS:  # a text file, a model's weights: no format fits
        raise InvalidInput(f"{name} is not media lattice can export (its kind is {kind})",
                           hint=f"exports are made from images, video, audio and Lottie animations; use the file as it is "
                                f"({command('lattice cat', name, after=' > FILE')})")
    if options.format is None:
        fmt = format_of_output(out) if out else None
        if fmt is None:
            from lattice.errors import UsageError

            raise UsageError("export needs a format: pass --format, or an --output whose extension names one",
                             hint=f"formats are: {', '.join(FORMATS)}; e.g. {command('lattice export', name, options='-o out.mp4')}")
        options = replace(options, format=fmt)
    params = options.params(kind)
    check_source(name, kind, v.media, params)
    from lattice.export_target import resolve_target

    target = resolve_target(repo, out, name, options.format, cwd, kind, force)
    regenerated = ensure_present(repo, name, v.number, regen=regen, notify=notify, command_name="lattice export")
    if target.asset is None:
        params["embed"] = json.dumps({"lattice": {"asset": name, "version": v.number, "object": v.object,
                                                  "recipe": msgspec.to_builtins(v.recipe) if v.recipe else None,
                                                  "export": {k: params[k] for k in ("format", "quality", "width", "height", "fps", "start", "end")}}},
                                     sort_keys=True, separators=(",", ":"))
    else:  # the manifest records the whole chain; embed what stays true when the source changes
        params["embed"] = json.dumps({"lattice": {"asset": target.asset, "source": name}}, sort_keys=True, separators=(",", ":"))
    from lattice.history import head_branch

    # The source's object id in the payload: gc keeps what a queued job names.
    payload = {"root": str(repo.root), "source": name, "version": v.number, "object": v.object, "params": params,
               "out": str(target.path), "asset": target.asset, "branch": head_branch(repo) or "", "force": force}
    done = run_job(repo, "export", payload, "lattice export", on_poll, estimate_key=f"export:{options.format}:{options.quality}")
    result = msgspec.convert(done.result, ExportResult)
    result.regenerated = regenerated
    return result


def export_job(ctx) -> dict:
    """Handler of "export" jobs."""
    import msgspec

    from lattice.jobs import _repo
    from lattice.produce import Hooks
    from lattice.storage_db import touch

    pl = ctx.job.payload
    repo = _repo(pl["root"])
    hooks = Hooks(progress=ctx.progress, env=ctx.env, on_process=ctx.on_process, timeout=ctx.timeout)
    v = repo.record(pl["source"]).version(pl["version"])
    touch(repo, v.object)  # a use, as cat's and checkout's: gc evicts the least recently used outputs first
    p = pl["params"]
    out = repo.root / pl["asset"] if pl["asset"] else Path(pl["out"])  # an asset: in this project, wherever it moved
    base = {"source": pl["source"], "version": v.number, "format": p["format"], "quality": p["quality"], "output": str(out)}
    if pl["asset"]:
        return msgspec.to_builtins(_record_export(repo, pl["asset"], pl["source"], v.object, p, hooks, base, pl.get("branch", "")))
    from lattice.media import extension

    side = None  # the recipe, where the file cannot carry it
    if not carries_recipe(p["format"], p["source_kind"]):
        side = json.dumps(json.loads(p["embed"]), indent=2, sort_keys=True).encode() + b"\n"
    # A file goes into place, with its sidecar, through the re-check of
    # place_outside; a frames directory through place_frames' (its own rule).
    from lattice.export_target import place_outside

    if p["format"] == "frames":  # the same re-check, by the frames rule, with its sidecar
        from lattice.export_target import place_frames

        place = functools.partial(place_frames, repo, source=pl["source"], sidecar=side)
    else:
        place = functools.partial(place_outside, repo, force=pl.get("force", False), source=pl["source"], oid=v.object,
                                  fmt=p["format"], sidecar=side)
    try:
        with repo.objects.as_file(v.object, extension(pl["source"])) as src:
            embedded = _write_file(src, out, p, hooks, place)
    except GeneratorFailed as e:  # a deterministic CPU generator's failure repeats (lattice.produce.generated_file)
        e.retryable = e.transient
        raise
    sidecar = None if side is None else str(out) + SIDECAR
    size = sum(f.stat().st_size for f in out.iterdir()) if out.is_dir() else out.stat().st_size
    return msgspec.to_builtins(ExportResult(**base, bytes=size, embedded=embedded, sidecar=sidecar))


def _write_file(src: Path, out: Path, p: dict, hooks, place: Callable[..., None] | None = None) -> bool:
    """Encode next to `out`, then rename into place (by `place`, when given:
    `place(tmp, out)` for a file, `place(tmp, out, old)` for frames, which
    moves the old directory aside to `old`): never a half-written deliverable."""
    from lattice.export_encode import encode
    from lattice.export_target import refused_in, sweep_stale_temps
    from lattice.fsutil import fsync_dir, publish, temp_dir_near, temp_path_near

    if p["format"] != "frames":
        sweep_stale_temps(out)
        try:
            tmp = temp_path_near(out)
        except OSError as e:  # a folder that takes no files fails the same way on every try
            refused = refused_in(e, out.parent)
            if refused is None:
                raise
            raise refused from e
        try:
            embedded = encode(src, tmp, p, progress=hooks.progress, timeout=hooks.timeout, on_process=hooks.on_process)
            (place or publish)(tmp, out)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return embedded
    out.parent.mkdir(parents=True, exist_ok=True)
    # Named by pid, as a file's temp is: what a killed frames export left
    # (its frames so far) goes with the next export to `out`.
    sweep_stale_temps(out)
    tmp = temp_dir_near(out)
    old = temp_dir_near(out)
    os.rmdir(old)  # only its name: the earlier frames directory is moved there
    try:
        encode(src, tmp, p, progress=hooks.progress, timeout=hooks.timeout, on_process=hooks.on_process)
        if place is not None:
            place(tmp, out, old)
        else:
            if out.exists():
                os.replace(out, old)  # a directory cannot be replaced in one rename: move the old one aside first
            os.replace(tmp, out)
            fsync_dir(out.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return False


def _record_export(repo: Repository, asset: str, source: str, source_object: str, p: dict, hooks, base: dict,
                   branch: str = "") -> ExportResult:
    from lattice.media import extension
    from lattice.produce import produce
    from lattice.render import record_version
    from lattice.worktree import materialize

    recipe = export_recipe(source, source_object, p)
    oid, _ = produce(repo, recipe, extension(asset), hooks)
    record = repo.manifest.read(asset)
    if record is not None and record.current.object == oid and record.current.recipe == recipe:
        number, size = len(record.versions), record.current.size
    else:
        note = f"export {source} as {p['format']} ({p['quality']})"
        v = record_version(repo, asset, recipe, oid, "initial" if record is None else "modified", note, note, branch)
        number, size = v.number, v.size
    materialize(repo, asset, oid, size)
    return ExportResult(**base, bytes=size, asset=asset, asset_version=number, embedded=p["format"] in EMBEDS)
