"""Procedural sources: ffmpeg's lavfi generators (fractals, cellular
automata, gradients, test patterns, tones, noise) rendered to an image, a
video or a sound, chosen by the output's extension.

Every value that reaches the lavfi graph string is a number formatted here or
a string checked against a strict pattern: a parameter must never be able to
add a filter (`movie=` reads files) or an option to the graph.
"""

from __future__ import annotations

import re
from typing import Any

from lattice.errors import InvalidInput
from lattice.generators.base import Generator, Param, RunContext
from lattice.generators.encode import AUDIO_EXTS, IMAGE_EXTS, VIDEO_EXTS, output_args, run_into_output, vf

SEED_SPACE = 2**32  # lavfi seeds run 0..UINT32_MAX; -1 would mean "random"

_HEX_COLOR = re.compile(r"^(?:#|0x)?[0-9A-Fa-f]{6}(?:[0-9A-Fa-f]{2})?\Z")
# The names `ffmpeg -colors` lists (it matches them ignoring case), kept here
# so validation never starts ffmpeg; a test checks them against the binary.
# "random" is left out on purpose: it draws from entropy whatever the seed.
COLOR_NAMES = frozenset("""
    aliceblue antiquewhite aqua aquamarine azure beige bisque black blanchedalmond blue blueviolet brown
    burlywood cadetblue chartreuse chocolate coral cornflowerblue cornsilk crimson cyan darkblue
    darkcyan darkgoldenrod darkgray darkgreen darkkhaki darkmagenta darkolivegreen darkorange darkorchid
    darkred darksalmon darkseagreen darkslateblue darkslategray darkturquoise darkviolet deeppink
    deepskyblue dimgray dodgerblue firebrick floralwhite forestgreen fuchsia gainsboro ghostwhite gold
    goldenrod gray green greenyellow honeydew hotpink indianred indigo ivory khaki lavender
    lavenderblush lawngreen lemonchiffon lightblue lightcoral lightcyan lightgoldenrodyellow lightgreen
    lightgrey lightpink lightsalmon lightseagreen lightskyblue lightslategray lightsteelblue lightyellow
    lime limegreen linen magenta maroon mediumaquamarine mediumblue mediumorchid mediumpurple
    mediumseagreen mediumslateblue mediumspringgreen mediumturquoise mediumvioletred midnightblue
    mintcream mistyrose moccasin navajowhite navy oldlace olive olivedrab orange orangered orchid
    palegoldenrod palegreen paleturquoise palevioletred papayawhip peachpuff peru pink plum powderblue
    purple red rosybrown royalblue saddlebrown salmon sandybrown seagreen seashell sienna silver skyblue
    slateblue slategray snow springgreen steelblue tan teal thistle tomato turquoise violet wheat white
    whitesmoke yellow yellowgreen
""".split())
_LIFE_RULE = re.compile(r"^[BbSs]?[0-8]{0,9}/[BbSs]?[0-8]{0,9}\Z")


def num(v: Any) -> str:
    """A number as lavfi reads it: bools as 0/1, floats round-tripped exactly."""
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, float):
        return repr(v)
    return str(int(v))


def checked(name: str, value: str, pattern: re.Pattern, what: str) -> str:
    if not pattern.match(value):
        raise InvalidInput(f"parameter {name!r} must be {what}; got {value!r}")
    return value


def color(name: str, value: str) -> str:
    """A colour ffmpeg knows: one of its names, or RRGGBB[AA] hex with an
    optional # or 0x; refused here rather than as an ffmpeg error at render time."""
    if _HEX_COLOR.match(value) or value.lower() in COLOR_NAMES:
        return value
    from lattice.errors import closest

    raise InvalidInput(f"bad parameter {name!r}: {value!r} is not a colour{closest(value.lower(), COLOR_NAMES)}",
                       hint="use a name such as white, black, red, navy, darkorange (`ffmpeg -colors` lists them) or #RRGGBB")


def lavfi(filter_name: str, options: dict[str, str]) -> str:
    return filter_name + "=" + ":".join(f"{k}={v}" for k, v in options.items())


def _prepare(gen: Generator, ctx: RunContext) -> tuple[dict[str, Any], str]:
    """Validate again here, not only at submit time: the graph string is built
    from these values, so run() must never trust what it was handed."""
    from lattice.media import extension

    ext = extension(ctx.output.name)
    gen.check_output(ext)
    gen.check_inputs(len(ctx.inputs))
    params = gen.normalize(ctx.params)
    ctx.output.parent.mkdir(parents=True, exist_ok=True)
    return params, ext


class _Options:
    """Sources whose params become lavfi options: building the options
    checks every value (patterns, colours), so `check` builds them."""

    def check(self, params: dict[str, Any]) -> None:
        self.options(params, 0)


class VideoSource(_Options, Generator):
    """A lavfi video source; subclasses name the filter and map their params."""

    kinds = ("image", "video")
    extensions = IMAGE_EXTS + VIDEO_EXTS
    filter_name = ""
    common = (
        Param("width", "int", 320, "frame width in pixels", min=2, max=8192),
        Param("height", "int", 240, "frame height in pixels", min=2, max=8192),
        Param("duration", "float", 2.0, "length in seconds (video outputs)", min=0.04, max=3600),
        Param("fps", "float", 25.0, "frames per second (video outputs)", min=1, max=240),
    )

    def check(self, params: dict[str, Any]) -> None:
        # ffmpeg never ends a lavfi source cut to less than one frame: it spins
        # at 100% CPU. Refused for every output, as the params do not know it.
        frames = params["duration"] * params["fps"]
        if frames < 1 - 1e-9:
            raise InvalidInput(
                f"bad parameters: duration × fps must give at least one frame; "
                f"duration={params['duration']:g} × fps={params['fps']:g} gives {frames:.2g}",
                hint=f"raise duration to at least {1 / params['fps']:.3g} s, or raise fps",
            )
        super().check(params)

    def options(self, p: dict[str, Any], seed: int) -> dict[str, str]:
        return {}

    def source(self, p: dict[str, Any], seed: int) -> str:
        opts = {"s": f"{p['width']}x{p['height']}", "r": num(p["fps"]), **self.options(p, seed)}
        return lavfi(self.filter_name, opts)

    def run(self, ctx: RunContext) -> None:
        from lattice.ffmpeg import file_url

        p, ext = _prepare(self, ctx)
        ctx.progress(0.0, "preparing")
        args = ["-t", f"{p['duration']:.6f}", "-f", "lavfi", "-i", self.source(p, ctx.seed % SEED_SPACE),
                *vf(ext, []), *output_args(ext), file_url(ctx.output)]
        run_into_output(ctx, args, None if ext in IMAGE_EXTS else p["duration"], "generating")


class Mandelbrot(VideoSource):
    id = "ffmpeg.mandelbrot"
    filter_name = "mandelbrot"
    description = "a zoom into the Mandelbrot set"
    params = VideoSource.common + (
        Param("maxiter", "int", 7189, "iterations before a point counts as inside", min=1, max=100000),
        Param("start_x", "float", -0.743643887037158704752191506114774, "centre, real part", min=-100, max=100),
        Param("start_y", "float", -0.131825904205311970493132056385139, "centre, imaginary part", min=-100, max=100),
        Param("start_scale", "float", 3.0, "initial scale", min=1e-12, max=1e6),
        Param("end_scale", "float", 0.3, "final scale", min=1e-12, max=1e6),
        Param("end_pts", "float", 400.0, "frame count over which the zoom runs", min=1, max=1e9),
        Param("bailout", "float", 10.0, "escape radius", min=1e-6, max=1e6),
        Param("inner", "choice", "mincol", "colouring inside the set",
              choices=("black", "period", "convergence", "mincol")),
        Param("outer", "choice", "normalized_iteration_count", "colouring outside the set",
              choices=("iteration_count", "normalized_iteration_count", "white", "outz")),
    )

    def options(self, p, seed):
        names = ("maxiter", "start_x", "start_y", "start_scale", "end_scale", "end_pts", "bailout")
        return {**{k: num(p[k]) for k in names}, "inner": p["inner"], "outer": p["outer"]}


class Life(VideoSource):
    id = "ffmpeg.life"
    filter_name = "life"
    description = "Conway's game of life (or another rule) from a seeded random grid"
    params = VideoSource.common + (
        Param("rule", "str", "B3/S23", "birth/survival rule, e.g. B36/S23"),
        Param("ratio", "float", 0.618034, "share of cells alive at the start", min=0, max=1),
        Param("mold", "int", 0, "how fast dead cells fade (0: at once)", min=0, max=255),
        Param("stitch", "bool", True, "wrap around the edges"),
        Param("life_color", "str", "white", "colour of living cells (name or RRGGBB)"),
        Param("death_color", "str", "black", "colour of dead cells"),
        Param("mold_color", "str", "black", "colour dead cells fade to"),
    )

    def options(self, p, seed):
        colors = {k: color(k, p[k]) for k in ("life_color", "death_color", "mold_color")}
        return {"rule": checked("rule", p["rule"], _LIFE_RULE, "a rule like B3/S23"),
                "ratio": num(p["ratio"]), "seed": str(seed), "mold": num(p["mold"]),
                "stitch": num(p["stitch"]), **colors}


class CellAuto(VideoSource):
    id = "ffmpeg.cellauto"
    filter_name = "cellauto"
    description = "an elementary cellular automaton from a seeded random row"
    params = VideoSource.common + (
        Param("rule", "int", 110, "Wolfram rule number", min=0, max=255),
        Param("ratio", "float", 0.618034, "share of cells alive at the start", min=0, max=1),
        Param("scroll", "bool", True, "scroll the pattern down"),
        Param("start_full", "bool", False, "fill the whole frame from the first frame"),
        Param("stitch", "bool", True, "wrap around the edges"),
    )

    def options(self, p, seed):
        return {"rule": num(p["rule"]), "ratio": num(p["ratio"]), "seed": str(seed),
                "scroll": num(p["scroll"]), "start_full": num(p["start_full"]), "stitch": num(p["stitch"])}


class Gradients(VideoSource):
    id = "ffmpeg.gradients"
    filter_name = "gradients"
    description = "rotating colour gradients; the seed picks the colours and the line"
    params = VideoSource.common + (
        Param("nb_colors", "int", 2, "number of colours", min=2, max=8),
        Param("colors", "str", "", "comma-separated colours (RRGGBB or names); empty: chosen by the seed"),
        Param("speed", "float", 0.01, "rotation speed", min=0, max=1),
        Param("type", "choice", "linear", "gradient shape",
              choices=("linear", "radial", "circular", "spiral", "square")),
    )

    def options(self, p, seed):
        import blake3

        given = [c.strip() for c in p["colors"].split(",") if c.strip()]
        if len(given) > 8:
            raise InvalidInput("parameter 'colors' takes at most 8 colours")
        # The filter's own default colour, "random", is drawn from the system's
        # entropy whatever the seed; derive the colours from the seed instead.
        rnd = blake3.blake3(f"ffmpeg.gradients:{seed}".encode()).digest(length=24)
        colors = [color("colors", c) for c in given]
        colors += ["0x" + rnd[i * 3:i * 3 + 3].hex() for i in range(len(colors), 8)]
        return {"n": num(p["nb_colors"]), **{f"c{i}": c for i, c in enumerate(colors)},
                "speed": num(p["speed"]), "type": p["type"], "seed": str(seed)}


class Sierpinski(VideoSource):
    id = "ffmpeg.sierpinski"
    filter_name = "sierpinski"
    description = "a Sierpinski carpet or triangle, panned by seeded random jumps"
    params = VideoSource.common + (
        Param("type", "choice", "carpet", "fractal", choices=("carpet", "triangle")),
        Param("jump", "int", 100, "largest jump between frames", min=1, max=10000),
    )

    def options(self, p, seed):
        return {"type": p["type"], "jump": num(p["jump"]), "seed": str(seed)}


class TestSrc(VideoSource):
    id = "ffmpeg.testsrc"
    description = "a test pattern (with a frame counter for testsrc)"
    params = VideoSource.common + (
        Param("pattern", "choice", "testsrc", "which pattern",
              choices=("testsrc", "testsrc2", "smptebars", "smptehdbars", "rgbtestsrc", "yuvtestsrc")),
    )

    def source(self, p, seed):
        return lavfi(p["pattern"], {"s": f"{p['width']}x{p['height']}", "r": num(p["fps"])})


class AudioSource(_Options, Generator):
    """A lavfi audio source rendered to a sound file."""

    kinds = ("audio",)
    extensions = AUDIO_EXTS
    filter_name = ""
    common = (
        Param("duration", "float", 2.0, "length in seconds", min=0.01, max=3600),
        Param("sample_rate", "int", 48000, "samples per second", min=8000, max=192000),
    )

    def options(self, p: dict[str, Any], seed: int) -> dict[str, str]:
        return {}

    def run(self, ctx: RunContext) -> None:
        from lattice.ffmpeg import file_url

        p, ext = _prepare(self, ctx)
        ctx.progress(0.0, "preparing")
        src = lavfi(self.filter_name, {"r": num(p["sample_rate"]), "d": f"{p['duration']:.6f}",
                                       **self.options(p, ctx.seed % SEED_SPACE)})
        args = ["-f", "lavfi", "-i", src, *output_args(ext), file_url(ctx.output)]
        run_into_output(ctx, args, p["duration"], "generating")


class Sine(AudioSource):
    id = "ffmpeg.sine"
    filter_name = "sine"
    description = "a sine tone, optionally beeping once a second"
    params = AudioSource.common + (
        Param("frequency", "float", 440.0, "tone in Hz", min=1, max=96000),
        Param("beep_factor", "float", 0.0, "beep at this multiple of the frequency each second (0: none)",
              min=0, max=100),
    )

    def options(self, p, seed):
        return {"f": num(p["frequency"]), "b": num(p["beep_factor"])}


class Noise(AudioSource):
    id = "ffmpeg.noise"
    filter_name = "anoisesrc"
    description = "seeded noise: white, pink, brown, blue, violet or velvet"
    params = AudioSource.common + (
        Param("color", "choice", "white", "noise colour",
              choices=("white", "pink", "brown", "blue", "violet", "velvet")),
        Param("amplitude", "float", 0.5, "peak level, 0..1", min=0, max=1),
        Param("density", "float", 0.05, "impulse density (velvet only)", min=0, max=1),
    )

    def options(self, p, seed):
        return {"c": p["color"], "a": num(p["amplitude"]), "density": num(p["density"]), "seed": str(seed)}


SOURCES = (Mandelbrot, Life, CellAuto, Gradients, Sierpinski, TestSrc, Sine, Noise)
