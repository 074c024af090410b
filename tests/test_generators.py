"""Built-in generators against the real ffmpeg (tiny sizes), the registry,
command generators and their trust gate."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import blake3
import pytest

from lattice import generators, trust
from lattice.errors import GeneratorFailed, InvalidInput, TrustRequired
from lattice.ffmpeg import probe
from lattice.generators.base import Generator, RunContext

TINY = {"width": 32, "height": 24, "duration": 0.2}
SOURCES = ["ffmpeg.mandelbrot", "ffmpeg.life", "ffmpeg.cellauto", "ffmpeg.gradients",
           "ffmpeg.sierpinski", "ffmpeg.testsrc"]


def make(gen_id, output: Path, params=None, seed=0, inputs=(), registry=None, **ctx):
    """Run a generator the way a job does: check, normalize, run."""
    gen = (registry or generators.load()).get(gen_id)
    gen.check_output(output.suffix)
    gen.check_inputs(len(inputs))
    gen.run(RunContext(params=gen.normalize(params or {}), seed=seed, prompt=ctx.pop("prompt", ""),
                       negative_prompt="", inputs=list(inputs), output=output, **ctx))
    return output


def digest(path: Path) -> str:
    return blake3.blake3(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """A few inputs for the derivations, made by the sources themselves."""
    d = tmp_path_factory.mktemp("clips")
    make("ffmpeg.testsrc", d / "a.mp4", TINY)
    make("ffmpeg.life", d / "b.webm", {**TINY, "width": 40, "height": 30}, seed=3)
    make("ffmpeg.testsrc", d / "still.png", TINY)
    make("ffmpeg.sine", d / "tone.wav", {"duration": 0.2})
    return d


# -- sources ---------------------------------------------------------------


@pytest.mark.parametrize("gen_id", SOURCES)
@pytest.mark.parametrize("ext", ["png", "mp4"])
def test_video_sources_make_the_requested_size(gen_id, ext, tmp_path):
    params = {**TINY, "maxiter": 100} if gen_id == "ffmpeg.mandelbrot" else TINY
    seen = []
    out = make(gen_id, tmp_path / f"x.{ext}", params, progress=lambda f, s: seen.append(s))
    info = probe(out)
    assert (info.width, info.height) == (32, 24)
    if ext == "mp4":
        assert (info.kind, info.codec, info.frames) == ("video", "h264", 5)
        assert info.duration == pytest.approx(0.2, abs=0.05)
    else:
        assert (info.kind, info.frames) == ("image", 1)
    assert seen[0] == "preparing" and seen[-1] == "finalizing"


@pytest.mark.parametrize("gen_id", ["ffmpeg.sine", "ffmpeg.noise"])
@pytest.mark.parametrize("ext", ["wav", "mp3", "flac", "ogg"])
def test_audio_sources(gen_id, ext, tmp_path):
    info = probe(make(gen_id, tmp_path / f"x.{ext}", {"duration": 0.3, "sample_rate": 22050}))
    assert (info.kind, info.sample_rate) == ("audio", 22050)
    assert info.duration == pytest.approx(0.3, abs=0.06)


@pytest.mark.parametrize("ext,codec", [("jpg", "mjpeg"), ("webp", "webp"), ("webm", "vp9"), ("gif", "gif")])
def test_other_formats(ext, codec, tmp_path):
    info = probe(make("ffmpeg.gradients", tmp_path / f"x.{ext}", TINY))
    assert (info.codec, info.width, info.height) == (codec, 32, 24)


@pytest.mark.parametrize("ext", ["png", "jpg", "webp", "mp4", "webm", "gif", "wav", "mp3", "flac", "ogg"])
def test_same_recipe_same_bytes(ext, tmp_path):
    gen_id = "ffmpeg.noise" if ext in ("wav", "mp3", "flac", "ogg") else "ffmpeg.gradients"
    params = {"duration": 0.2} if gen_id == "ffmpeg.noise" else TINY
    # Different directories and names: nothing about the path may leak in.
    a = make(gen_id, tmp_path / "one" / f"a.{ext}", params, seed=5)
    b = make(gen_id, tmp_path / "two" / f"other-name.{ext}", params, seed=5)
    assert digest(a) == digest(b)


@pytest.mark.parametrize("gen_id,ext,params", [
    ("ffmpeg.mandelbrot", "png", {}), ("ffmpeg.mandelbrot", "mp4", {}), ("ffmpeg.mandelbrot", "png", {"start_scale": 0.5}),
    ("ffmpeg.mandelbrot", "png", {"start_x": -0.5}), ("ffmpeg.mandelbrot", "png", {"view": "start"}),
    ("ffmpeg.life", "png", {}), ("ffmpeg.cellauto", "png", {}), ("ffmpeg.gradients", "png", {}),
    ("ffmpeg.sierpinski", "png", {}), ("ffmpeg.sierpinski", "mp4", {"type": "triangle"}),
    ("ffmpeg.testsrc", "png", {}), ("ffmpeg.sine", "wav", {}), ("ffmpeg.noise", "wav", {}),
])
def test_the_seed_changes_the_output_exactly_where_the_generator_says(gen_id, ext, params, tmp_path):
    """Through the real ffmpeg: one seed gives the same bytes every time;
    two seeds give different bytes unless the generator declares (for these
    params) that it ignores the seed, which `regen --seed` then refuses."""
    params = {**({"duration": 0.2} if ext == "wav" else TINY), **params}
    gen = generators.load().get(gen_id)
    seeded = gen.unseeded(gen.normalize(params), ext) is None
    one = digest(make(gen_id, tmp_path / f"1.{ext}", params, seed=1))
    again = digest(make(gen_id, tmp_path / "again" / f"1.{ext}", params, seed=1))
    two = digest(make(gen_id, tmp_path / f"2.{ext}", params, seed=2))
    big = digest(make(gen_id, tmp_path / f"3.{ext}", params, seed=2**40 + 1))  # folded into lavfi's range
    assert one == again == big
    assert (one != two) == seeded
    assert seeded == (gen_id not in ("ffmpeg.testsrc", "ffmpeg.sine") and params.get("view") != "start"
                      and "start_x" not in params)


def test_mandelbrot_seeds_look_at_different_places_of_the_set():
    """The view a seed picks is part of the recipe's meaning: pinned here
    (any change must bump the generator's version), and spread over the
    spots, both halves of the plane and a range of depths."""
    from lattice.generators.sources import _SPOTS, Mandelbrot, seeded_view

    gen = Mandelbrot()
    assert gen.version == "2"
    assert gen.source(gen.normalize({}), 7) == (
        "mandelbrot=s=320x240:r=25.0:maxiter=7189:start_x=-0.1144149352894027:start_y=0.9489282240498894:"
        "start_scale=0.12041884661104119:end_scale=0.012041884661104119:end_pts=400.0:bailout=10.0:"
        "inner=mincol:outer=normalized_iteration_count")
    views = [seeded_view(seed, 3.0) for seed in range(200)]
    near = {min(range(len(_SPOTS)), key=lambda i: abs(_SPOTS[i][0] - x) + abs(abs(_SPOTS[i][1]) - abs(y)))
            for x, y, _ in views}
    assert near == set(range(len(_SPOTS)))
    assert any(y > 0 for _, y, _ in views) and any(y < 0 for _, y, _ in views)
    depths = [d for _, _, d in views]
    assert min(depths) < 0.001 and max(depths) > 0.5 and len(set(depths)) == len(depths)


def test_sierpinski_seeds_start_the_pan_in_different_places():
    from lattice.generators.sources import Sierpinski, sierpinski_start

    gen = Sierpinski()
    assert gen.version == "2"
    assert gen.source(gen.normalize({}), 7) == "sierpinski=s=666x455:r=25.0:type=carpet:jump=100:seed=7,crop=320:240:346:215"

    def digits(n):
        return [n // 3**i % 3 for i in range(6)]

    for kind, limit in (("carpet", 729), ("triangle", 512)):
        starts = [sierpinski_start(seed, kind) for seed in range(100)]
        assert len(set(starts)) > 90 and all(0 <= x < limit and 0 <= y < limit for x, y in starts)
        for x, y in starts:  # on the fractal, not in one of its holes
            assert (x & y == 0) if kind == "triangle" else (1, 1) not in zip(digits(x), digits(y))


@pytest.mark.parametrize("raw,view", [
    ({}, "seed"), ({"start_scale": 0.01}, "seed"), ({"start_x": "-0.5"}, "start"), ({"start_y": 0.2}, "start"),
    ({"view": "start"}, "start"),
    # A version 1 recipe (no view): its default centre is the seed's to pick now, a centre it gave stays.
    ({"start_x": -0.743643887037158704752191506114774, "start_y": -0.131825904205311970493132056385139}, "seed"),
])
def test_mandelbrot_view_follows_the_centre(raw, view):
    assert generators.load().get("ffmpeg.mandelbrot").normalize(raw)["view"] == view


def test_mandelbrot_refuses_a_centre_the_seed_would_replace():
    with pytest.raises(InvalidInput, match="only with view=start") as e:
        generators.load().get("ffmpeg.mandelbrot").normalize({"view": "seed", "start_x": 0.25})
    assert "--set view=start" in e.value.hint


def test_only_procedural_sources_and_commands_with_a_seed_placeholder_use_the_seed():
    reg = generators.load({"generators": {
        "seeded": {"argv": ["tool", "--seed", "x{seed}", "{output}"], "extensions": ["png"]},
        "plain": {"argv": ["tool", "{output}"], "extensions": ["png"]},
    }}, repo_root=Path("/"))
    uses = {g.id for g in reg.all() if g.uses_seed and not g.id.startswith("test.")}  # the test plug-ins
    assert uses == {"ffmpeg.mandelbrot", "ffmpeg.life", "ffmpeg.cellauto", "ffmpeg.gradients", "ffmpeg.sierpinski",
                    "ffmpeg.noise", "seeded"}
    assert "{seed}" in reg.get("plain").unseeded({}, "png")


def test_a_derivation_makes_the_same_bytes_for_every_seed(clips, tmp_path):
    a = make("ffmpeg.thumbnail", tmp_path / "a.png", {"size": 16}, seed=1, inputs=[clips / "b.webm"])
    b = make("ffmpeg.thumbnail", tmp_path / "b.png", {"size": 16}, seed=2, inputs=[clips / "b.webm"])
    assert digest(a) == digest(b)


def test_source_params_change_output(tmp_path):
    a = make("ffmpeg.life", tmp_path / "a.png", {**TINY, "ratio": 0.2}, seed=1)
    b = make("ffmpeg.life", tmp_path / "b.png", {**TINY, "ratio": 0.8}, seed=1)
    c = make("ffmpeg.sine", tmp_path / "c.wav", {"duration": 0.2, "frequency": 220})
    d = make("ffmpeg.sine", tmp_path / "d.wav", {"duration": 0.2, "frequency": 880})
    assert digest(a) != digest(b) and digest(c) != digest(d)


# -- parameter and request validation --------------------------------------


def test_unknown_param(tmp_path):
    with pytest.raises(InvalidInput, match="has no parameter 'colour'"):
        make("ffmpeg.life", tmp_path / "x.png", {"colour": "red"})
    with pytest.raises(InvalidInput, match=r"no parameter 'widht' \(did you mean: width"):
        make("ffmpeg.life", tmp_path / "x.png", {"widht": 5})


@pytest.mark.parametrize("params,match", [
    ({"width": "wide"}, "must be of type int"),
    ({"width": 1.5}, "must be of type int"),
    ({"duration": "long"}, "must be of type float"),
    ({"duration": "nan"}, "must be a finite number"),
    ({"duration": float("inf")}, "must be a finite number"),
    ({"width": 1}, "between 2 and 8192"),
    ({"height": 100000}, "between 2 and 8192"),
    ({"type": "hexagon"}, "must be one of"),
])
def test_bad_param_values(params, match, tmp_path):
    with pytest.raises(InvalidInput, match=match):
        make("ffmpeg.sierpinski", tmp_path / "x.png", params)


def test_a_malformed_string_param_is_refused_when_the_recipe_is_made(tmp_repo):
    from conftest import run_cli

    r = run_cli("gen", "l.png", "--model", "ffmpeg.life", "--set", "rule=xyz", cwd=tmp_repo.root)
    assert r.code == 4 and "parameter 'rule' must be a rule like B3/S23" in r.err
    assert run_cli("queue", "ls", "--json", cwd=tmp_repo.root).json == []  # nothing was queued


@pytest.mark.parametrize("params", [
    {"rule": "B3/S23:filename=/etc/passwd"},
    {"rule": "B3/S23,movie=/etc/passwd"},
    {"life_color": "white:rule=B1/S1"},
])
def test_strings_cannot_reach_into_the_filter_graph(params, tmp_path):
    with pytest.raises(InvalidInput):
        make("ffmpeg.life", tmp_path / "x.png", {**TINY, **params})


@pytest.mark.parametrize("duration, fps", [("0.3", "1"), ("0.04", "1"), ("0.2", "1"), ("0.04", "10")])
def test_less_than_one_frame_is_refused_at_gen_not_left_to_hang(tmp_repo, duration, fps):
    from conftest import run_proc

    # A real process under a timeout: ffmpeg spins forever on this graph.
    r = run_proc("gen", "clip.mp4", "--model", "ffmpeg.testsrc", "--set", f"duration={duration}", "--set", f"fps={fps}",
                 cwd=tmp_repo.root, timeout=30)
    assert r.returncode == 4, r.stderr
    assert "duration × fps must give at least one frame" in r.stderr and "hint: raise duration" in r.stderr


def test_every_video_source_needs_one_frame():
    reg = generators.load()
    video = [g for g in reg.all() if {"duration", "fps"} <= {p.name for p in g.params}]
    assert {g.id for g in video} >= set(SOURCES)
    for gen in video:
        with pytest.raises(InvalidInput, match="at least one frame"):
            gen.normalize({"duration": 0.3, "fps": 1})
        assert gen.normalize({"duration": 0.1, "fps": 10})["fps"] == 10  # exactly one frame is fine


@pytest.mark.parametrize("model, param, value, bad", [
    ("ffmpeg.life", "life_color", "zzz", "zzz"),
    ("ffmpeg.life", "mold_color", "#12345", "#12345"),
    ("ffmpeg.gradients", "colors", "red,blue,zzz", "zzz"),
])
def test_an_unknown_colour_is_refused_when_the_recipe_is_made(tmp_repo, model, param, value, bad):
    from conftest import run_cli

    r = run_cli("gen", "c.png", "--model", model, "--set", "width=8", "--set", "height=8", "--set", f"{param}={value}",
                cwd=tmp_repo.root)
    assert r.code == 4, r.err
    assert f"bad parameter {param!r}: {bad!r} is not a colour" in r.err and "#RRGGBB" in r.err and "ffmpeg" not in r.err.split("hint")[0]
    assert run_cli("queue", "ls", "--json", cwd=tmp_repo.root).json == []  # nothing was queued


def test_colours_ffmpeg_knows_pass(tmp_path):
    life = generators.load().get("ffmpeg.life")
    life.normalize({"life_color": "DarkOrange", "death_color": "#0a0B0c", "mold_color": "0x11223344"})
    out = make("ffmpeg.gradients", tmp_path / "g.png", {**TINY, "colors": "Navy, ffcc00 ,white"})
    assert probe(out).width == 32


def test_the_colour_names_are_the_ones_ffmpeg_lists():
    import subprocess

    from lattice.ffmpeg import ffmpeg_exe
    from lattice.generators.sources import COLOR_NAMES

    listed = subprocess.run([ffmpeg_exe(), "-hide_banner", "-colors"], capture_output=True, text=True, check=True).stdout
    names = {line.split()[0].lower() for line in listed.splitlines()[1:] if line.strip()}
    assert COLOR_NAMES == names - {"random"}  # random ignores the seed


def test_run_validates_even_when_handed_raw_params(tmp_path):
    gen = generators.load().get("ffmpeg.life")
    ctx = RunContext(params={"rule": "B3/S23:f=/etc/passwd"}, seed=0, prompt="", negative_prompt="",
                     inputs=[], output=tmp_path / "x.png")
    with pytest.raises(InvalidInput):
        gen.run(ctx)


def test_wrong_output_extension(tmp_path):
    with pytest.raises(InvalidInput, match=r"cannot make \.wav"):
        make("ffmpeg.mandelbrot", tmp_path / "x.wav")
    with pytest.raises(InvalidInput, match=r"cannot make \.png"):
        make("ffmpeg.sine", tmp_path / "x.png")


def test_wrong_input_count(clips, tmp_path):
    with pytest.raises(InvalidInput, match="takes exactly 0"):
        make("ffmpeg.testsrc", tmp_path / "x.png", TINY, inputs=[clips / "a.mp4"])
    with pytest.raises(InvalidInput, match="takes 2 to 64"):
        make("ffmpeg.concat", tmp_path / "x.mp4", inputs=[clips / "a.mp4"])
    with pytest.raises(InvalidInput, match="takes exactly 2"):
        make("ffmpeg.mux", tmp_path / "x.mp4", inputs=[clips / "a.mp4"])


# -- derivations -------------------------------------------------------------


def test_thumbnail_fits_and_never_enlarges(clips, tmp_path):
    t = probe(make("ffmpeg.thumbnail", tmp_path / "t.png", {"size": 16}, inputs=[clips / "a.mp4"]))
    assert (t.width, t.height, t.frames) == (16, 12, 1)
    t = probe(make("ffmpeg.thumbnail", tmp_path / "t.jpg", {"size": 16}, inputs=[clips / "still.png"]))
    assert (t.width, t.height) == (16, 12)
    t = probe(make("ffmpeg.thumbnail", tmp_path / "big.png", {"size": 1000}, inputs=[clips / "still.png"]))
    assert (t.width, t.height) == (32, 24)


def test_thumbnail_of_a_sound_is_refused(clips, tmp_path):
    with pytest.raises(InvalidInput, match="no picture"):
        make("ffmpeg.thumbnail", tmp_path / "t.png", inputs=[clips / "tone.wav"])


def test_resize(clips, tmp_path):
    v = probe(make("ffmpeg.resize", tmp_path / "r.mp4", {"width": 16, "height": 12}, inputs=[clips / "a.mp4"]))
    assert (v.width, v.height, v.frames) == (16, 12, 5)
    i = probe(make("ffmpeg.resize", tmp_path / "r.png", {"width": 64}, inputs=[clips / "still.png"]))
    assert (i.width, i.height) == (64, 48)
    with pytest.raises(InvalidInput, match="needs width or height"):
        make("ffmpeg.resize", tmp_path / "r2.png", inputs=[clips / "still.png"])


def test_crop(clips, tmp_path):
    c = probe(make("ffmpeg.crop", tmp_path / "c.webm", {"x": 4, "y": 2, "width": 16, "height": 10},
                   inputs=[clips / "a.mp4"]))
    assert (c.width, c.height, c.codec) == (16, 10, "vp9")
    rest = probe(make("ffmpeg.crop", tmp_path / "c.png", {"x": 8, "y": 4}, inputs=[clips / "still.png"]))
    assert (rest.width, rest.height) == (24, 20)
    with pytest.raises(InvalidInput, match="does not fit in the 32x24 input"):
        make("ffmpeg.crop", tmp_path / "c2.png", {"x": 20, "width": 16}, inputs=[clips / "still.png"])


def test_frame(clips, tmp_path):
    f1 = make("ffmpeg.frame", tmp_path / "f1.png", {"index": 1}, inputs=[clips / "a.mp4"])
    f3 = make("ffmpeg.frame", tmp_path / "f3.png", {"index": 3}, inputs=[clips / "a.mp4"])
    f3b = make("ffmpeg.frame", tmp_path / "f3b.png", {"index": 3}, inputs=[clips / "a.mp4"])
    assert (probe(f1).width, probe(f1).frames) == (32, 1)
    assert digest(f1) != digest(f3) == digest(f3b)
    with pytest.raises(InvalidInput, match="has 5 frames; there is no frame 5"):
        make("ffmpeg.frame", tmp_path / "f5.png", {"index": 5}, inputs=[clips / "a.mp4"])


def test_transcode(clips, tmp_path):
    w = probe(make("ffmpeg.transcode", tmp_path / "t.webm", inputs=[clips / "a.mp4"]))
    assert (w.codec, w.width, w.frames) == ("vp9", 32, 5)
    g = probe(make("ffmpeg.transcode", tmp_path / "t.gif", inputs=[clips / "b.webm"]))
    assert (g.codec, g.width, g.height) == ("gif", 40, 30)
    m = probe(make("ffmpeg.transcode", tmp_path / "t.mp3", inputs=[clips / "tone.wav"]))
    assert (m.kind, m.audio_codec) == ("audio", "mp3")
    q1 = make("ffmpeg.transcode", tmp_path / "q1.mp4", {"crf": 10}, inputs=[clips / "b.webm"])
    q2 = make("ffmpeg.transcode", tmp_path / "q2.mp4", {"crf": 40}, inputs=[clips / "b.webm"])
    assert q1.stat().st_size > q2.stat().st_size
    with pytest.raises(InvalidInput, match="no sound"):
        make("ffmpeg.transcode", tmp_path / "t.wav", inputs=[clips / "a.mp4"])
    with pytest.raises(InvalidInput, match="encoder name"):
        make("ffmpeg.transcode", tmp_path / "t2.mp4", {"codec": "libx264 -vf x"}, inputs=[clips / "a.mp4"])
    with pytest.raises(GeneratorFailed, match="ffmpeg failed"):
        make("ffmpeg.transcode", tmp_path / "t3.mp4", {"codec": "nosuchcodec"}, inputs=[clips / "a.mp4"])


def test_concat_in_order(clips, tmp_path):
    ab = make("ffmpeg.concat", tmp_path / "ab.mp4", inputs=[clips / "a.mp4", clips / "b.webm", clips / "a.mp4"])
    info = probe(ab)
    assert (info.width, info.height, info.frames) == (32, 24, 15)  # the first clip's size
    assert info.duration == pytest.approx(0.6, abs=0.06)
    ba = make("ffmpeg.concat", tmp_path / "ba.mp4", inputs=[clips / "b.webm", clips / "a.mp4", clips / "a.mp4"])
    assert digest(ab) != digest(ba)
    again = make("ffmpeg.concat", tmp_path / "again.mp4", inputs=[clips / "a.mp4", clips / "b.webm", clips / "a.mp4"])
    assert digest(ab) == digest(again)


def test_mux_and_concat_with_sound(clips, tmp_path):
    m = make("ffmpeg.mux", tmp_path / "m.mp4", inputs=[clips / "a.mp4", clips / "tone.wav"])
    info = probe(m)
    assert (info.codec, info.audio_codec, info.width) == ("h264", "aac", 32)
    w = probe(make("ffmpeg.mux", tmp_path / "m.webm", inputs=[clips / "a.mp4", clips / "tone.wav"]))
    assert (w.codec, w.audio_codec) == ("vp9", "opus")
    both = probe(make("ffmpeg.concat", tmp_path / "mm.mp4", inputs=[m, m]))
    assert both.audio_codec == "aac" and both.duration == pytest.approx(0.4, abs=0.06)
    with pytest.raises(InvalidInput, match="has no sound"):
        make("ffmpeg.mux", tmp_path / "x.mp4", inputs=[clips / "a.mp4", clips / "b.webm"])


def test_derivation_is_reproducible(clips, tmp_path):
    a = make("ffmpeg.resize", tmp_path / "a.mp4", {"width": 20}, inputs=[clips / "b.webm"])
    b = make("ffmpeg.resize", tmp_path / "b.mp4", {"width": 20}, inputs=[clips / "b.webm"])
    assert digest(a) == digest(b)


def test_bad_inputs_are_named_by_asset_and_refused_at_gen(tmp_repo):
    from conftest import run_cli

    for args in (["v.mp4", "--model", "ffmpeg.testsrc", "--set", "width=32", "--set", "duration=0.4", "--set", "fps=10"],
                 ["s.wav", "--model", "ffmpeg.sine", "--set", "duration=0.2"]):
        assert run_cli("gen", *args, cwd=tmp_repo.root).code == 0
    cases = [
        (["f.png", "--model", "ffmpeg.frame", "-i", "v.mp4", "--set", "index=50"], "error: v.mp4 has 4 frames; there is no frame 50"),
        (["t.png", "--model", "ffmpeg.thumbnail", "-i", "s.wav"], "error: input 0 (s.wav) has no picture ffmpeg can read"),
        (["m.mp4", "--model", "ffmpeg.mux", "-i", "v.mp4", "-i", "v.mp4"], "error: input 1 (v.mp4) has no sound"),
        (["a.wav", "--model", "ffmpeg.transcode", "-i", "v.mp4"], "error: v.mp4 has no sound to make a .wav from"),
        (["c.png", "--model", "ffmpeg.crop", "-i", "v.mp4", "--set", "x=40"], "input (v.mp4)"),
    ]
    for args, message in cases:
        r = run_cli("gen", *args, cwd=tmp_repo.root)
        assert r.code == 4 and message in r.err and "tmp" not in r.err, r.err
    assert len(run_cli("queue", "ls", "--json", cwd=tmp_repo.root).json) == 2  # the two gens above, nothing more


def test_a_bad_input_found_only_at_run_time_names_the_asset(tmp_repo):
    from conftest import run_cli

    assert run_cli("gen", "v.mp4", "--model", "ffmpeg.testsrc", "--set", "duration=0.4", "--set", "fps=10",
                   "--set", "width=32", cwd=tmp_repo.root).code == 0
    assert run_cli("gen", "f.png", "--model", "ffmpeg.frame", "-i", "v.mp4", "--set", "index=3", cwd=tmp_repo.root).code == 0
    r = run_cli("regen", "f.png", "--set", "index=50", cwd=tmp_repo.root)  # regen checks the inputs' facts too
    assert r.code == 4 and "error: v.mp4 has 4 frames; there is no frame 50" in r.err, r.err
    # The input shrinks under a recipe already made: only the cascade's job finds out.
    r = run_cli("regen", "v.mp4", "--set", "duration=0.2", cwd=tmp_repo.root)
    assert r.code == 4 and "failed: f.png: v.mp4 has 2 frames; there is no frame 3" in r.err and "tmp" not in r.err, r.err


def test_a_context_without_input_names_falls_back_to_the_file_name(tmp_path):
    ctx = RunContext(params={}, seed=0, prompt="", negative_prompt="", inputs=[tmp_path / "a.mp4", tmp_path / "b.wav"],
                     output=tmp_path / "o.png", input_names=["shots/a.mp4"])
    assert (ctx.input_name(0), ctx.input_name(1)) == ("shots/a.mp4", "b.wav")


# -- registry ----------------------------------------------------------------


def test_registry_lists_builtins_sorted():
    reg = generators.load()
    ids = [g.id for g in reg.all()]
    assert ids == sorted(ids)
    for gid in [*SOURCES, "ffmpeg.sine", "ffmpeg.noise", "ffmpeg.thumbnail", "ffmpeg.resize", "ffmpeg.crop",
                "ffmpeg.frame", "ffmpeg.transcode", "ffmpeg.concat", "ffmpeg.mux"]:
        g = reg.get(gid)
        assert g.deterministic and g.slot == "cpu" and g.description and g.extensions and g.version
        assert all(p.help for p in g.params)
        for p in g.params:
            assert p.convert(p.default) == p.default  # every default passes its own checks


def test_unknown_generator_suggests_close_names():
    with pytest.raises(InvalidInput) as e:
        generators.load().get("ffmpeg.mandelbrto")
    assert "unknown generator ffmpeg.mandelbrto" in e.value.message
    assert "ffmpeg.mandelbrot" in e.value.message
    assert "lattice generators" in e.value.hint


def test_installed_plugins_load():
    assert "test.text" in generators.load()  # tests/plugins, through its entry point


class _Good(Generator):
    id = "plug.good"
    extensions = ("txt",)

    def run(self, ctx):
        ctx.output.write_text("ok")


class _EP(SimpleNamespace):
    def load(self):
        return self.loader()


def _boom():
    raise ImportError("No module named 'torch'")


def _exits():
    raise SystemExit(2)  # a module that parses sys.argv with argparse when imported


def test_broken_plugins_are_skipped_with_a_warning(monkeypatch):
    eps = [
        _EP(name="plug.broken", value="broken_mod:Gen", loader=_boom),
        _EP(name="plug.notagen", value="mod:thing", loader=lambda: 42),
        _EP(name="plug.norun", value="mod:NoRun", loader=lambda: type("NoRun", (Generator,), {"id": "plug.norun", "extensions": ("x",)})),
        _EP(name="plug.clash", value="mod:Clash", loader=lambda: type("C", (_Good,), {"id": "ffmpeg.life"})),
        _EP(name="plug.badid", value="mod:BadId", loader=lambda: type("B", (_Good,), {"id": "my gen\nx"})),
        _EP(name="plug.badext", value="mod:BadExt", loader=lambda: type("E", (_Good,), {"id": "plug.badext", "extensions": ("../x",)})),
        _EP(name="plug.strext", value="mod:StrExt", loader=lambda: type("S", (_Good,), {"id": "plug.strext", "extensions": "png"})),
        _EP(name="plug.exits", value="mod:Exits", loader=_exits),
        _EP(name="plug.good", value="mod:_Good", loader=lambda: _Good),
    ]
    monkeypatch.setattr(generators, "entry_points", lambda: eps)
    reg = generators.load()
    assert "plug.good" in reg and reg.get("ffmpeg.life").__class__.__name__ == "Life"
    text = "\n".join(reg.warnings)
    assert "plug.broken" in text and "No module named 'torch'" in text
    assert "plug.notagen" in text and "plug.norun" in text and "already taken" in text
    assert "plug.badid" in text and "must start with a letter" in text
    assert "plug.badext" in text and "plug.strext" in text and "extensions must be" in text
    assert "plug.badext" not in reg and "plug.strext" not in reg
    assert "plug.exits" in text and "SystemExit: 2" in text
    assert len(reg.warnings) == 8
    with pytest.raises(InvalidInput, match="could not be loaded"):
        reg.get("plug.broken")


def test_load_runs_no_subprocess(monkeypatch):
    import subprocess

    def boom(*a, **k):
        raise AssertionError("loading must not start a process")

    monkeypatch.setattr(subprocess, "Popen", boom)
    generators.load({"generators": {"g": {"argv": ["true"], "extensions": ["png"]}}}, repo_root=Path("/"))


# -- command generators and the trust gate -----------------------------------

SCRIPT = r"""
import json, os, sys, time
args = sys.argv[1:]
mode = os.environ.get("GEN_MODE", "ok")
out = args[args.index("--out") + 1]
if mode == "sleep":
    import subprocess
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    open("child.pid", "w").write(str(child.pid))
    time.sleep(60)
if mode == "fail":
    print("loading model...", file=sys.stderr)
    print("RuntimeError: CUDA out of memory", file=sys.stderr)
    sys.exit(3)
if mode == "empty":
    open(out, "w").close()
if mode == "ok":
    print("progress 0.5")
    json.dump({"argv": args, "cwd": os.getcwd()}, open(out, "w"))
"""


@pytest.fixture
def cmd_repo(tmp_path):
    root = tmp_path / "proj"
    root.mkdir()
    (root / "gen.py").write_text(SCRIPT)
    config = {"generators": {"echo": {
        "argv": [sys.executable, "gen.py", "--prompt", "{prompt}", "--seed", "{seed}", "--steps",
                 "{param.steps}", "--literal", "{not a placeholder} {seed", "--all", "{inputs}",
                 "--first", "{input0}", "--out", "{output}"],
        "extensions": ["json"], "inputs": [1, 3], "version": "2",
        "params": {"steps": {"type": "int", "default": 30, "min": 1, "max": 200, "help": "sampling steps"}},
    }}}
    return SimpleNamespace(root=root, config=config)


def run_cmd(repo, output, prompt="a cat", inputs=None, params=None, env=None, **ctx):
    if inputs is None:
        inputs = [repo.root / "gen.py"]
    reg = generators.load(repo.config, repo_root=repo.root)
    assert not reg.warnings, reg.warnings
    return make("echo", output, params or {}, seed=7, inputs=inputs, registry=reg, prompt=prompt,
                env=env or {}, **ctx)


def test_command_arguments_are_never_shell_parsed(cmd_repo, tmp_path):
    trust.trust(cmd_repo.root, cmd_repo.config)
    a, b = tmp_path / "in a.txt", tmp_path / "in;b.txt"
    a.write_text("a"), b.write_text("b")
    evil = "$(touch PWNED); x `touch PWNED2` && rm -rf / {seed} 'q\" {prompt}"
    seen = []
    out = run_cmd(cmd_repo, tmp_path / "o.json", prompt=evil, inputs=[a, b], params={"steps": 12},
                  progress=lambda f, s: seen.append((f, s)))
    got = json.loads(out.read_text())
    argv = got["argv"]
    assert argv[argv.index("--prompt") + 1] == evil  # one argument, and {seed} inside it stays text
    assert argv[argv.index("--seed") + 1] == "7"
    assert argv[argv.index("--steps") + 1] == "12"
    assert argv[argv.index("--literal") + 1] == "{not a placeholder} {seed"
    i = argv.index("--all")
    assert argv[i + 1:i + 3] == [str(a), str(b)] and argv[i + 3] == "--first"
    assert argv[argv.index("--first") + 1] == str(a)
    assert Path(got["cwd"]) == cmd_repo.root
    assert (0.5, "generating") in seen
    for d in (cmd_repo.root, tmp_path, Path.cwd()):
        assert not (d / "PWNED").exists() and not (d / "PWNED2").exists()


def test_command_failures(cmd_repo, tmp_path):
    trust.trust(cmd_repo.root, cmd_repo.config)
    with pytest.raises(GeneratorFailed, match="RuntimeError: CUDA out of memory") as e:
        run_cmd(cmd_repo, tmp_path / "o.json", env={"GEN_MODE": "fail"})
    assert "exit status 3" in e.value.message and "loading model" in e.value.hint
    with pytest.raises(GeneratorFailed, match="wrote nothing"):
        run_cmd(cmd_repo, tmp_path / "o.json", env={"GEN_MODE": "nothing"})
    with pytest.raises(GeneratorFailed, match="wrote an empty file"):
        run_cmd(cmd_repo, tmp_path / "o.json", env={"GEN_MODE": "empty"})
    stale = tmp_path / "stale.json"
    stale.write_text("old output")  # left by someone else: must not count as the program's
    with pytest.raises(GeneratorFailed, match="wrote nothing"):
        run_cmd(cmd_repo, stale, env={"GEN_MODE": "nothing"})


def test_command_timeout_kills_its_children(cmd_repo, tmp_path):
    cmd_repo.config["generators"]["echo"]["timeout"] = 1
    trust.trust(cmd_repo.root, cmd_repo.config)
    start = time.monotonic()
    with pytest.raises(GeneratorFailed, match=r"command generator echo timed out after 1 s"):
        run_cmd(cmd_repo, tmp_path / "o.json", env={"GEN_MODE": "sleep"})
    assert time.monotonic() - start < 15
    pid = int((cmd_repo.root / "child.pid").read_text())
    for _ in range(50):  # the grandchild dies with the group; its zombie is reaped by init
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        if Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z"):
            break
        time.sleep(0.1)
    else:
        pytest.fail("the command's child survived the timeout")


def test_a_command_generators_timeout_is_its_jobs_and_queue_show_says_so(tmp_repo):
    """`timeout` in [generators.NAME] replaces the job type's timeout: the
    job stores it, the worker keeps to it (longer or shorter than the
    type's), and `queue show` prints it, not the type's default."""
    from conftest import run_cli

    script = "import sys, time\ntime.sleep(float(sys.argv[1]))\nopen(sys.argv[2], 'w').write('done')\n"
    (tmp_repo.root / "slow.py").write_text(script)
    cfg = tmp_repo.dir / "config.toml"
    tables = "".join(
        f"\n[generators.{name}]\nargv = {json.dumps([sys.executable, 'slow.py', str(sleep), '{output}'])}\n"
        f'extensions = ["txt"]\ntimeout = {timeout}\n'
        for name, sleep, timeout in (("patient", 1.5, 4), ("hasty", 3, 0.5))
    )
    cfg.write_text(cfg.read_text() + tables + "\n[queue.types.image]\nretries = 0\ntimeout = 1\n")
    assert run_cli("trust", cwd=tmp_repo.root).code == 0
    r = run_cli("gen", "p.txt", "--model", "patient", cwd=tmp_repo.root)
    assert r.code == 0, r.err  # 1.5 s, past the type's 1 s, within its own 4
    r = run_cli("gen", "h.txt", "--model", "hasty", cwd=tmp_repo.root)
    assert r.code == 8 and "timed out after 0.5 s" in r.err, r.err
    r = run_cli("gen", "t.txt", "--model", "test.text", "--detach", "--json", cwd=tmp_repo.root)
    jobs = {j["payload"]["step"]["name"]: j for j in run_cli("queue", "ls", "--json", cwd=tmp_repo.root).json}
    assert {n: j["timeout"] for n, j in jobs.items()} == {"p.txt": 4, "h.txt": 0.5, "t.txt": 1}
    show = run_cli("queue", "show", str(jobs["p.txt"]["id"]), cwd=tmp_repo.root).out
    assert "timeout:    4s\n" in show
    show = run_cli("queue", "show", str(jobs["h.txt"]["id"]), cwd=tmp_repo.root).out
    assert "timeout:    0.5s\n" in show and "exit code:  8\n" in show
    assert "timeout:    1s\n" in run_cli("queue", "show", str(jobs["t.txt"]["id"]), cwd=tmp_repo.root).out


def test_trust_gate(cmd_repo, tmp_path, monkeypatch):
    out = tmp_path / "o.json"
    with pytest.raises(TrustRequired, match="command generator echo is declared"):
        run_cmd(cmd_repo, out)
    assert not out.exists()
    assert not trust.is_trusted(cmd_repo.root, cmd_repo.config)
    trust.trust(cmd_repo.root, cmd_repo.config)
    assert trust.is_trusted(cmd_repo.root, cmd_repo.config)
    run_cmd(cmd_repo, out)
    # The approval lives with the user, not in the project.
    assert trust.trust_file().is_relative_to(os.environ["XDG_CONFIG_HOME"])
    assert str(cmd_repo.root.resolve()) in trust.trust_file().read_text()
    assert not any("trusted" in p.name for p in cmd_repo.root.rglob("*"))
    # Changing the commands withdraws the approval.
    cmd_repo.config["generators"]["echo"]["argv"][1] = "other.py"
    with pytest.raises(TrustRequired):
        run_cmd(cmd_repo, out)
    # A copy of the project elsewhere is not approved.
    trust.trust(cmd_repo.root, cmd_repo.config)
    assert not trust.is_trusted(tmp_path / "clone", cmd_repo.config)
    # No repository root known: refuse rather than guess.
    gen = generators.load(cmd_repo.config).get("echo")
    with pytest.raises(TrustRequired):
        gen.run(RunContext(params={}, seed=0, prompt="", negative_prompt="", inputs=[], output=out))
    assert trust.untrust(cmd_repo.root) and not trust.is_trusted(cmd_repo.root, cmd_repo.config)


def test_the_approval_covers_scripts_in_named_folders_and_names_with_braces(tmp_path):
    """`python3 tool` runs tool/__main__.py; `g{x}.py` is a file, not a
    placeholder: a change to either asks for approval again."""
    root = tmp_path / "proj"
    (root / "tool").mkdir(parents=True)
    (root / "tool" / "__main__.py").write_text("v1")
    (root / "g{x}.py").write_text("v1")
    config = {"generators": {"d": {"argv": ["python3", "tool", "{output}"]}, "b": {"argv": ["python3", "g{x}.py", "{output}"]}}}
    first = trust.commands_digest(config, root)
    (root / "tool" / "__main__.py").write_text("evil")
    second = trust.commands_digest(config, root)
    (root / "g{x}.py").write_text("evil")
    assert len({first, second, trust.commands_digest(config, root)}) == 3


def test_trust_with_a_generators_key_that_is_not_a_table_is_one_clear_error(tmp_repo):
    from conftest import run_cli

    (tmp_repo.dir / "config.toml").write_text('generators = "abc"\n')
    r = run_cli("trust", cwd=tmp_repo.root)
    assert r.code == 4 and "generators must be a table" in r.err and "Traceback" not in r.err


def test_trust_revoke_withdraws_the_approval(tmp_repo):
    """`lattice trust --revoke`: the project's commands refuse to run again
    (exit 9) until approved anew; withdrawing nothing says so."""
    from conftest import run_cli

    (tmp_repo.root / "w.py").write_text("import sys\nopen(sys.argv[1], 'w').write('w')\n")
    cfg = tmp_repo.dir / "config.toml"
    cfg.write_text(cfg.read_text() + f'\n[generators.w]\nargv = {json.dumps([sys.executable, "w.py", "{output}"])}\nextensions = ["txt"]\n')
    assert run_cli("trust", cwd=tmp_repo.root).code == 0
    assert run_cli("gen", "a.txt", "--model", "w", cwd=tmp_repo.root).code == 0
    r = run_cli("trust", "--revoke", cwd=tmp_repo.root)
    assert r.code == 0 and r.out.startswith("approval withdrawn"), r.out
    r = run_cli("gen", "b.txt", "--model", "w", cwd=tmp_repo.root)
    assert r.code == 9 and "not approved" in r.err, r.err
    assert run_cli("trust", "--revoke", "--json", cwd=tmp_repo.root).json == {"revoked": False}
    assert run_cli("trust", cwd=tmp_repo.root).code == 0
    assert run_cli("gen", "b.txt", "--model", "w", cwd=tmp_repo.root).code == 0


def test_digest_is_canonical_and_covers_only_commands():
    a = {"generators": {"g": {"argv": ["x"], "extensions": ["png"]}}, "user": {"name": "a"}}
    b = {"user": {"name": "b"}, "generators": {"g": {"extensions": ["png"], "argv": ["x"]}}}
    assert trust.commands_digest(a) == trust.commands_digest(b)
    assert trust.commands_digest(a) != trust.commands_digest({"generators": {"g": {"argv": ["y"], "extensions": ["png"]}}})
    assert trust.is_trusted(Path("/nowhere"), {"user": {}})  # nothing to approve


@pytest.mark.parametrize("name,table,why", [
    ("ffmpeg.life", {"argv": ["x"], "extensions": ["png"]}, "taken by a built-in"),
    ("ffmpeg.mine", {"argv": ["x"], "extensions": ["png"]}, "reserved"),
    ("g", {"extensions": ["png"]}, "argv must be"),
    ("g", {"argv": "python gen.py", "extensions": ["png"]}, "argv must be"),
    ("g", {"argv": ["x"]}, "extensions must be"),
    ("g", {"argv": ["x"], "extensions": ["../../x"]}, "extensions must be"),
    ("g", {"argv": ["x"], "extensions": ["png"], "shell": True}, "unknown key 'shell'"),
    ("g", {"argv": ["x", "{input0}"], "extensions": ["png"], "inputs": [0, 2]}, "min > 0"),
    ("g", {"argv": ["x", "--in={inputs}"], "extensions": ["png"], "inputs": [0, 2]}, "element of its own"),
    ("g", {"argv": ["x", "{param.nope}"], "extensions": ["png"]}, "no declared parameter"),
    ("g", {"argv": ["x"], "extensions": ["png"], "params": {"n": {"type": "int", "default": "ten"}}}, "default"),
    ("g", {"argv": ["x"], "extensions": ["png"], "timeout": -1}, "timeout"),
    ("bad name!", {"argv": ["x"], "extensions": ["png"]}, "a name must"),
])
def test_malformed_command_tables_are_skipped_with_a_warning(name, table, why):
    from lattice.generators.command import CommandGenerator

    reg = generators.load({"generators": {name: table}}, repo_root=Path("/"))
    assert name not in reg or not isinstance(reg.get(name), CommandGenerator)
    assert any(why in w for w in reg.warnings), reg.warnings
    assert "ffmpeg.life" in reg  # the rest still loads


def test_command_generator_declared_fields(cmd_repo):
    g = generators.load(cmd_repo.config, repo_root=cmd_repo.root).get("echo")
    assert (g.version, g.deterministic, g.extensions, g.kinds, g.min_inputs, g.max_inputs, g.slot) == (
        "2", False, ("json",), ("vector",), 1, 3, "cpu")
    assert g.normalize({"steps": "12"}) == {"steps": 12}
    with pytest.raises(InvalidInput, match="between 1 and 200"):
        g.normalize({"steps": 0})


def test_a_frame_ffmpeg_cannot_find_is_an_error_not_an_empty_file(clips, tmp_path, monkeypatch):
    from lattice.ffmpeg import MediaInfo

    # Frame counts from a container's header are estimates; pretend it said 100.
    monkeypatch.setattr("lattice.ffmpeg.probe", lambda p: MediaInfo(kind="video", size=1, width=32, height=24, frames=100))
    with pytest.raises(GeneratorFailed, match="wrote no output"):
        make("ffmpeg.frame", tmp_path / "f.png", {"index": 50}, inputs=[clips / "a.mp4"])


def test_a_built_in_is_found_without_scanning_the_plug_ins(monkeypatch):
    """Built-ins win every name clash: asking for one loads nothing else;
    anything beyond them loads the plug-ins once."""
    from lattice.errors import InvalidInput

    scans = []
    monkeypatch.setattr(generators, "entry_points", lambda: scans.append(1) or [])
    reg = generators.load({})
    assert reg.get("ffmpeg.testsrc").id == "ffmpeg.testsrc" and scans == []
    with pytest.raises(InvalidInput, match="unknown generator"):
        reg.get("no.such")
    assert "ffmpeg.testsrc" in reg and reg.warnings == [] and scans == [1]


@pytest.mark.parametrize("ext", ["png", "jpg", "gif", "webp"])
def test_a_command_generator_that_writes_no_image_where_it_names_one_fails(tmp_path, ext):
    """Garbage written as .png would be recorded as a valid image that every
    later generator and export refuses: the signature is checked."""
    root = tmp_path / "proj"
    root.mkdir()
    (root / "w.py").write_text("import sys\nopen(sys.argv[1], 'w').write('not an image')\n")
    repo = SimpleNamespace(root=root, config={"generators": {"junk": {
        "argv": [sys.executable, "w.py", "{output}"], "extensions": [ext]}}})
    trust.trust(repo.root, repo.config)
    reg = generators.load(repo.config, repo_root=repo.root)
    with pytest.raises(GeneratorFailed, match=f"is not a {ext.upper()} file"):
        make("junk", tmp_path / f"o.{ext}", {}, seed=7, inputs=[], registry=reg, prompt="", env={})


def test_the_approval_covers_a_module_run_with_dash_m(tmp_path):
    """`python3 -m tool` runs tool.py (or the package tool/) from the
    project: a `git pull` that changes it asks for approval again."""
    root = tmp_path / "proj"
    (root / "pkg").mkdir(parents=True)
    (root / "tool.py").write_text("v1")
    (root / "pkg" / "__init__.py").write_text("v1")
    (root / "pkg" / "sub.py").write_text("v1")
    config = {"generators": {"m": {"argv": ["python3", "-m", "tool", "{output}"]},
                             "p": {"argv": ["python3", "-m", "pkg.sub", "{output}"]}}}
    digests = [trust.commands_digest(config, root)]
    for changed in ("tool.py", "pkg/__init__.py", "pkg/sub.py"):
        (root / changed).write_text("evil")
        digests.append(trust.commands_digest(config, root))
    assert len(set(digests)) == 4


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS refuses file names that are not UTF-8")
def test_a_project_in_a_folder_whose_name_is_not_utf8_can_be_approved(tmp_path):
    root = tmp_path / os.fsdecode(b"proj-\xff")
    root.mkdir()
    config = {"generators": {"g": {"argv": ["x", "{output}"], "extensions": ["png"]}}}
    trust.trust(root, config)
    assert trust.is_trusted(root, config) and not trust.is_trusted(tmp_path, config)
    assert trust.untrust(root) and not trust.is_trusted(root, config)
    # A file of a folder the argv names may have such a name too.
    (root / "tool").mkdir()
    (root / "tool" / os.fsdecode(b"\xfe.py")).write_text("v1")
    config["generators"]["g"]["argv"] = ["python3", "tool", "{output}"]
    trust.trust(root, config)
    assert trust.is_trusted(root, config)
    (root / "tool" / os.fsdecode(b"\xfe.py")).write_text("v2")
    assert not trust.is_trusted(root, config)


def test_recipe_text_starting_with_a_dash_never_stands_where_an_option_may(tmp_path):
    """In a cloned project the prompt and str parameters come from someone
    else's manifest: one starting with '-' that fills an argument of its
    own would reach the approved program as an option its argv does not
    name. After an option, after `--` or inside an element it is a value;
    a negative number is a number."""
    root = tmp_path / "proj"
    root.mkdir()
    (root / "w.py").write_text("import json, sys\njson.dump(sys.argv[1:], open(sys.argv[-1], 'w'))\n")
    params = {"style": {"type": "str", "default": "x"}, "gain": {"type": "float", "default": 0.0}}
    config = {"generators": {
        "pos": {"argv": [sys.executable, "w.py", "{prompt}", "{param.style}", "{param.gain}", "{output}"],
                "extensions": ["json"], "params": params},
        "safe": {"argv": [sys.executable, "w.py", "--prompt", "{prompt}", "--style={param.style}", "--", "{param.style}",
                          "{output}"], "extensions": ["json"], "params": params},
    }}
    trust.trust(root, config)
    reg = generators.load(config, repo_root=root)

    def argv(gen, prompt, **params):
        out = make(gen, tmp_path / f"{gen}.json", params, seed=1, inputs=[], registry=reg, prompt=prompt, env={})
        return json.loads(out.read_text())[:-1]

    assert argv("pos", "a cat", style="b", gain=-0.5) == ["a cat", "b", "-0.5"]
    with pytest.raises(InvalidInput, match=r"prompt '--exec=evil' starts with '-'"):
        argv("pos", "--exec=evil")
    with pytest.raises(InvalidInput, match=r"parameter 'style' '-o' starts with '-'") as e:
        argv("pos", "a cat", style="-o")
    assert '"--"' in e.value.hint
    assert argv("safe", "-x", style="-y") == ["--prompt", "-x", "--style=-y", "--", "-y"]


def test_recipe_text_starting_with_a_dash_never_begins_an_element_of_the_argv(tmp_path):
    """`{prompt}.txt` is an argument of its own as much as `{prompt}` is: a
    prompt `--exec=evil` made it `--exec=evil.txt`, an option, and passed."""
    root = tmp_path / "proj"
    root.mkdir()
    (root / "w.py").write_text("import json, sys\njson.dump(sys.argv[1:], open(sys.argv[-1], 'w'))\n")
    params = {"gain": {"type": "float", "default": 0.0}}
    config = {"generators": {"glued": {"argv": [sys.executable, "w.py", "{prompt}.txt", "{param.gain}dB", "{output}"],
                                       "extensions": ["json"], "params": params}}}
    trust.trust(root, config)
    reg = generators.load(config, repo_root=root)

    def argv(prompt, **params):
        out = make("glued", tmp_path / "glued.json", params, seed=1, inputs=[], registry=reg, prompt=prompt, env={})
        return json.loads(out.read_text())[:-1]

    assert argv("a cat", gain=-0.5) == ["a cat.txt", "-0.5dB"]  # a negative number is a number
    with pytest.raises(InvalidInput, match=r"prompt '--exec=evil.txt' starts with '-': command generator glued would pass it") as e:
        argv("--exec=evil")
    assert '"{prompt}.txt"' in e.value.hint


def test_the_approval_covers_a_script_the_project_links_to_outside_it(tmp_path):
    """A cloned project can ship `gen.py` as a link to a file elsewhere
    (/tmp/x.py, which anyone may write): a change there asks again."""
    root, elsewhere = tmp_path / "proj", tmp_path / "shared"
    root.mkdir(), elsewhere.mkdir()
    (elsewhere / "x.py").write_text("v1")
    (root / "gen.py").symlink_to(elsewhere / "x.py")
    config = {"generators": {"g": {"argv": ["python3", "gen.py", "{output}"], "extensions": ["png"]}}}
    first = trust.commands_digest(config, root)
    (elsewhere / "x.py").write_text("evil")
    assert trust.commands_digest(config, root) != first


# -- derivations of awkward media: variable frame rates, 1-pixel and odd sides ----


@pytest.fixture(scope="module")
def awkward(tmp_path_factory):
    """A variable-rate clip (5 frames at 10 fps, then 15 at 30), a 1x1 image,
    a 1x1 and a 33x25 clip (VP9 keeps odd sides), a 3-second tone; all made
    with the ffmpeg binary directly, not by the generators under test."""
    from conftest import ffmpeg, vfr_clip

    d = tmp_path_factory.mktemp("awkward")
    vfr_clip(d / "vfr.mp4")
    ffmpeg("-f", "lavfi", "-i", "color=red:size=1x1", "-frames:v", "1", str(d / "dot.png"))
    for name, size in (("dot.webm", "1x1"), ("odd.webm", "33x25")):
        ffmpeg("-f", "lavfi", "-i", f"testsrc=size={size}:rate=10", "-t", "0.5", "-c:v", "libvpx-vp9", str(d / name))
    ffmpeg("-f", "lavfi", "-i", "sine=duration=3", str(d / "tone.wav"))
    return d


def gen_from(repo, media: Path, output: str, model: str, inputs: list[str], params: dict) -> Path:
    """`lattice gen OUTPUT --model MODEL --input ... --set ...`, the inputs
    copied from `media` and added first; the output's path."""
    import shutil

    from conftest import run_cli

    for name in inputs:
        shutil.copy(media / name, repo.root / name)
    assert run_cli("add", *inputs, cwd=repo.root).code == 0
    sets = [a for k, v in params.items() for a in ("--set", f"{k}={v}")]
    r = run_cli("gen", output, "--model", model, *[a for n in inputs for a in ("--input", n)], *sets, cwd=repo.root)
    assert r.code == 0, r.err
    return repo.root / output


@pytest.mark.parametrize("output, model, inputs, params, frames", [
    ("r.mp4", "ffmpeg.resize", ["vfr.mp4"], {"width": 16}, 20),
    ("c.webm", "ffmpeg.crop", ["vfr.mp4"], {"width": 16, "height": 16}, 20),
    ("t.gif", "ffmpeg.transcode", ["vfr.mp4"], {}, 20),
    ("t.webm", "ffmpeg.transcode", ["vfr.mp4"], {}, 20),
    ("j.mp4", "ffmpeg.concat", ["vfr.mp4", "vfr.mp4"], {}, 40),
    ("j.webm", "ffmpeg.concat", ["vfr.mp4", "vfr.mp4"], {"fps": 5}, 10),  # a rate asked for still resamples
    ("m.webm", "ffmpeg.mux", ["vfr.mp4", "tone.wav"], {}, 20),  # re-encoded (h264 is not copied into webm)
])
def test_a_derivation_keeps_every_frame_of_a_variable_rate_clip(tmp_repo, awkward, output, model, inputs, params, frames):
    """Version 1 encoded at the time base of the rate the clip's first
    frames declare (10 fps) and dropped 10 of its 15 fast frames; concat
    resampled every clip to the first one's mean rate."""
    from conftest import decoded_frames

    assert decoded_frames(gen_from(tmp_repo, awkward, output, model, inputs, params)) == frames


@pytest.mark.parametrize("output, model, inputs, params, size", [
    ("t.mp4", "ffmpeg.transcode", ["dot.png"], {}, (2, 2)),
    ("r.mp4", "ffmpeg.resize", ["vfr.mp4"], {"height": 1}, (2, 2)),
    ("c.mp4", "ffmpeg.crop", ["vfr.mp4"], {"width": 1, "height": 1}, (2, 2)),
    ("c.gif", "ffmpeg.crop", ["vfr.mp4"], {"width": 1, "height": 1}, (1, 1)),
    ("c.webm", "ffmpeg.crop", ["vfr.mp4"], {"x": 1, "y": 1, "width": 3, "height": 3}, (3, 3)),
    ("j.mp4", "ffmpeg.concat", ["dot.webm", "vfr.mp4"], {}, (2, 2)),
    ("j.webm", "ffmpeg.concat", ["dot.webm", "vfr.mp4"], {}, (1, 1)),
    ("j.gif", "ffmpeg.concat", ["odd.webm", "vfr.mp4"], {}, (33, 25)),
    ("m.mp4", "ffmpeg.mux", ["dot.webm", "tone.wav"], {}, (2, 2)),
])
def test_a_derivation_keeps_1_pixel_and_odd_sides(tmp_repo, awkward, output, model, inputs, params, size):
    """mp4 (4:2:0) rounded a 1-pixel side down to 0 and ffmpeg failed; it
    becomes 2. ffmpeg's crop and pad round an odd side of a 4:2:0 picture
    down: a 1-pixel crop failed, a 3x3 one came out 2x2, and concat to a
    size with an odd side failed."""
    info = probe(gen_from(tmp_repo, awkward, output, model, inputs, params))
    assert (info.width, info.height) == size


def test_crop_cuts_an_odd_edge_where_asked(tmp_path):
    """A 4:2:0 clip whose luma is 8 times the column: crop x=1 used to cut
    from column 0."""
    from conftest import ffmpeg

    ffmpeg("-f", "lavfi", "-i", "nullsrc=size=16x4:rate=10,geq=lum=16+8*X:cb=128:cr=128", "-t", "0.1",
           "-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv420p", str(tmp_path / "ramp.mp4"))

    def first_row(x: int, width: int) -> bytes:
        out = make("ffmpeg.crop", tmp_path / f"c{x}.png", {"x": x, "width": width, "height": 2}, inputs=[tmp_path / "ramp.mp4"])
        ffmpeg("-i", str(out), "-f", "rawvideo", "-pix_fmt", "gray", str(tmp_path / f"c{x}.raw"))
        return (tmp_path / f"c{x}.raw").read_bytes()[:width]

    assert first_row(1, 3) == first_row(0, 4)[1:]
