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


# Spots on the Mandelbrot set's edge that stay rich from the whole set down
# to a scale of about 0.001 (seahorse and elephant valleys, spirals,
# Misiurewicz points, minibrots): `view=seed` picks one by the seed.
_SPOTS = (
    (-0.743643887037158704752191506114774, -0.131825904205311970493132056385139),
    (0.2925, 0.0149), (-0.77568377, 0.13646737), (0.0, 1.0), (-0.1011, 0.9563), (-0.7453, 0.1127),
    (-1.25066, 0.02012), (0.001643721971153, -0.822467633298876), (-0.16070135, 1.0375665),
    (-0.235125, 0.827215), (0.42884, -0.231345), (-1.62917, -0.0203968),
)
_CENTRE = ("start_x", "start_y")


def seeded_view(seed: int, scale: float) -> tuple[float, float, float]:
    """(centre x, centre y, depth) that `seed` picks for a view starting at
    `scale`: one of the spots, maybe mirrored in the real axis (the set is
    symmetric), a depth from 1/2048 to 3/4 that the scales are multiplied
    by, and the centre nudged by up to an eighth of the first frame. Only
    float arithmetic IEEE rounds exactly (no libm), so every machine draws
    the same view."""
    import blake3

    d = blake3.blake3(f"ffmpeg.mandelbrot:{seed}".encode()).digest(length=24)

    def unit(i: int) -> float:  # [0, 1) from 6 bytes, exact in a double
        return int.from_bytes(d[i:i + 6], "big") / 2**48

    x, y = _SPOTS[d[0] % len(_SPOTS)]
    if d[1] & 1:
        y = -y
    depth = (0.25 + unit(2) / 2) / 2 ** (d[8] % 10)
    reach = scale * depth / 4
    return x + (unit(9) - 0.5) * reach, y + (unit(15) - 0.5) * reach, depth


class Mandelbrot(VideoSource):
    id = "ffmpeg.mandelbrot"
    version = "2"  # 2: the seed picks the view (view=seed); version 1 drew the same picture for every seed
    filter_name = "mandelbrot"
    description = "a zoom into the Mandelbrot set; the seed picks where"
    params = VideoSource.common + (
        Param("view", "choice", "seed", "seed: the seed picks the centre (a spot on the set's edge) and how deep "
              "to start, scaling start_scale and end_scale; start: the centre is start_x, start_y "
              "(the default when either is set)", choices=("seed", "start")),
        Param("maxiter", "int", 7189, "iterations before a point counts as inside", min=1, max=100000),
        Param("start_x", "float", -0.743643887037158704752191506114774, "centre, real part (view=start)", min=-100, max=100),
        Param("start_y", "float", -0.131825904205311970493132056385139, "centre, imaginary part (view=start)", min=-100, max=100),
        Param("start_scale", "float", 3.0, "initial scale", min=1e-12, max=1e6),
        Param("end_scale", "float", 0.3, "final scale", min=1e-12, max=1e6),
        Param("end_pts", "float", 400.0, "frame count over which the zoom runs", min=1, max=1e9),
        Param("bailout", "float", 10.0, "escape radius", min=1e-6, max=1e6),
        Param("inner", "choice", "mincol", "colouring inside the set",
              choices=("black", "period", "convergence", "mincol")),
        Param("outer", "choice", "normalized_iteration_count", "colouring outside the set",
              choices=("iteration_count", "normalized_iteration_count", "white", "outz")),
    )

    def _centre_set(self, raw: dict[str, Any]) -> bool:
        """Whether `raw` gives a centre other than the default one."""
        schema = {p.name: p for p in self.params}
        for k in _CENTRE:
            if k in raw:
                try:
                    if schema[k].convert(raw[k]) != schema[k].default:
                        return True
                except InvalidInput:
                    return True  # normalize reports it
        return False

    def normalize(self, raw):
        # A centre given without a view means that centre (so does one in a
        # version 1 recipe, which had no view).
        if "view" not in raw and self._centre_set(raw):
            raw = {**raw, "view": "start"}
        return super().normalize(raw)

    def revise(self, params, changes):
        if "view" not in changes and any(k in changes for k in _CENTRE):
            return {**params, **changes, "view": "start"}
        if changes.get("view") == "seed":  # the seed picks the centre now: the old one goes
            params = {k: v for k, v in params.items() if k not in _CENTRE}
        return {**params, **changes}

    def check(self, params):
        if params["view"] == "seed" and self._centre_set(params):
            raise InvalidInput("start_x and start_y are the centre only with view=start; with view=seed the seed picks it",
                               hint="add --set view=start to use them, or leave them out")
        super().check(params)

    def unseeded(self, params, extension):
        if params.get("view") == "start":
            return "with view=start the centre is start_x, start_y; --set view=seed lets the seed pick it"
        return None

    def options(self, p, seed):
        x, y, depth = (p["start_x"], p["start_y"], 1.0) if p["view"] == "start" else seeded_view(seed, p["start_scale"])
        opts = {"maxiter": num(p["maxiter"]), "start_x": num(x), "start_y": num(y),
                "start_scale": num(p["start_scale"] * depth), "end_scale": num(p["end_scale"] * depth)}
        opts.update({k: num(p[k]) for k in ("end_pts", "bailout")})
        return {**opts, "inner": p["inner"], "outer": p["outer"]}


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
    version = "2"  # 2: the seed picks where the pan starts; version 1 began every seed's pan at the same place
    filter_name = "sierpinski"
    description = "a Sierpinski carpet or triangle, panned by seeded random jumps from a seeded start"
    params = VideoSource.common + (
        Param("type", "choice", "carpet", "fractal", choices=("carpet", "triangle")),
        Param("jump", "int", 100, "largest jump between frames", min=1, max=10000),
    )

    def options(self, p, seed):
        return {"type": p["type"], "jump": num(p["jump"]), "seed": str(seed)}

    def source(self, p, seed):
        # The filter's pan starts at the same place for every seed (a still
        # would not depend on it): draw a larger frame and keep the part at
        # a seeded point of the fractal.
        x, y = sierpinski_start(seed, p["type"])
        w, h = p["width"], p["height"]
        opts = {"s": f"{w + x}x{h + y}", "r": num(p["fps"]), **self.options(p, seed)}
        return f"{lavfi(self.filter_name, opts)},crop={w}:{h}:{x}:{y}"


def sierpinski_start(seed: int, kind: str) -> tuple[int, int]:
    """Where `seed` starts the pan: a point of the fractal (not inside one of
    its holes, which are larger than a small frame), up to 728 pixels across
    and down for the carpet, 511 for the triangle."""
    import blake3

    d = blake3.blake3(f"ffmpeg.sierpinski:{seed}".encode()).digest(length=4)
    x, y = int.from_bytes(d[:2], "big"), int.from_bytes(d[2:], "big")
    if kind == "triangle":  # the points whose coordinates share no bit
        x %= 512
        return x, y % 512 & ~x
    x, y = x % 729, y % 729
    hole = 0  # the carpet's points share no base-3 digit 1: drop those from y
    for place in (1, 3, 9, 27, 81, 243):
        if x // place % 3 == 1 and y // place % 3 == 1:
            hole += place
    return x, y - hole


class TestSrc(VideoSource):
    id = "ffmpeg.testsrc"
    uses_seed = False
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
    uses_seed = False
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
