"""lattice export: every format read back by the probe, Lottie checked, the
recipe carried along, exports recorded in the project, bad input refused."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import decoded_frames, ffmpeg, run_cli, vfr_clip
from lattice.ffmpeg import probe
from lattice.repo import Repository


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """One repository with a tiny clip, a still and a tone (made once: ffmpeg is slow-ish)."""
    repo = Repository.init(tmp_path_factory.mktemp("export") / "proj")
    for args in (
        ("clip.mp4", "ffmpeg.testsrc", "width=64", "height=48", "duration=2"),
        ("still.png", "ffmpeg.testsrc", "width=64", "height=48", "pattern=smptebars"),
        ("tone.wav", "ffmpeg.sine", "duration=1"),
    ):
        name, model, *sets = args
        cmd = ["gen", name, "--model", model, "--seed", "1"]
        for s in sets:
            cmd += ["--set", s]
        r = run_cli(*cmd, cwd=repo.root)
        assert r.code == 0, r.err
    return repo


def export(repo, *args, cwd=None):
    return run_cli("export", *args, "--json", cwd=cwd or repo.root)


@pytest.mark.parametrize("fmt", ["mp4", "webm", "gif"])
def test_video_formats_have_the_requested_size_fps_and_duration(media, tmp_path, fmt):
    out = tmp_path / f"c.{fmt}"
    r = export(media, "clip.mp4", "--format", fmt, "--size", "32x24", "--fps", "10", "--range", "0.5-1.5", "-o", str(out))
    assert r.code == 0, r.err
    info = probe(out)
    assert (info.width, info.height) == (32, 24)
    assert info.fps == pytest.approx(10, abs=0.01)
    assert info.duration == pytest.approx(1.0, abs=0.11)


@pytest.mark.parametrize("fmt", ["png", "jpg", "webp"])
def test_still_formats_have_the_requested_size(media, tmp_path, fmt):
    out = tmp_path / f"c.{fmt}"
    assert export(media, "clip.mp4", "--format", fmt, "--size", "40x30", "-o", str(out)).code == 0
    info = probe(out)
    assert (info.width, info.height, info.kind) == (40, 30, "image")


@pytest.mark.parametrize("name, fmt, kind", [("c.webm", "webm", "video"), ("s.JPEG", "jpg", "image"), ("t.mp3", "mp3", "audio")])
def test_the_format_follows_the_output_extension(media, tmp_path, name, fmt, kind):
    source = {"video": "clip.mp4", "image": "still.png", "audio": "tone.wav"}[kind]
    r = export(media, source, "-o", str(tmp_path / name))
    assert r.code == 0, r.err
    assert r.json["format"] == fmt and probe(tmp_path / name).kind == kind


@pytest.mark.parametrize("args", [[], ["-o", "notes.txt"], ["-o", "frames-dir"]])
def test_no_format_and_no_telling_extension_is_a_usage_error(media, args):
    r = export(media, "clip.mp4", *args)
    assert r.code == 2 and r.err.startswith("error: export needs a format") and "formats are: mp4" in r.err


def test_frames_write_a_numbered_sequence(media, tmp_path):
    out = tmp_path / "frames"
    r = export(media, "clip.mp4", "--format", "frames", "--fps", "5", "--range", "0-1", "--size", "16x12", "-o", str(out))
    assert r.code == 0, r.err
    names = sorted(os.listdir(out))
    assert names == [f"frame_{i:05d}.png" for i in range(1, 6)]
    assert (probe(out / names[0]).width, probe(out / names[0]).height) == (16, 12)
    assert json.loads(Path(str(out) + ".lattice.json").read_text())["lattice"]["asset"] == "clip.mp4"


def test_a_still_exports_as_one_frame_unless_a_range_or_rate_asks_for_more(media, tmp_path):
    """A still's frames export wrote 25 identical PNGs (a still is looped
    for 1 s at 25 fps for a video); it is one picture, unless the user asks
    for a clip of it."""
    for args, count in (([], 1), (["--fps", "5"], 5), (["--range", "0-0.2"], 5)):
        out = tmp_path / f"frames{len(args)}{count}"
        r = export(media, "still.png", "--format", "frames", "-o", str(out), *args)
        assert r.code == 0, r.err
        assert sorted(os.listdir(out)) == [f"frame_{i:05d}.png" for i in range(1, count + 1)], args
        assert (probe(out / "frame_00001.png").width, probe(out / "frame_00001.png").height) == (64, 48)


@pytest.mark.parametrize("fmt", ["wav", "mp3"])
def test_audio_formats_have_the_requested_duration(media, tmp_path, fmt):
    out = tmp_path / f"t.{fmt}"
    assert export(media, "tone.wav", "--format", fmt, "--range", "0.25-0.75", "-o", str(out)).code == 0
    info = probe(out)
    assert info.kind == "audio" and info.duration == pytest.approx(0.5, abs=0.06)


@pytest.mark.parametrize("fmt", ["lottie", "dotlottie"])
def test_an_image_becomes_a_lottie_with_the_image_embedded(media, tmp_path, fmt):
    from lattice import lottie

    out = tmp_path / ("s.json" if fmt == "lottie" else "s.lottie")
    assert export(media, "still.png", "--format", fmt, "--size", "32x24", "--fps", "12", "-o", str(out)).code == 0
    data = out.read_bytes()
    assert lottie.check_file(data) == []
    doc = json.loads(lottie.animation_json(data))
    assert doc["assets"][0]["p"].startswith("data:image/png;base64,")
    assert (doc["w"], doc["h"], doc["fr"], doc["op"]) == (32, 24, 12, 12)
    info = probe(out)
    assert (info.width, info.height, info.fps) == (32, 24, 12)


def test_lottie_structural_check_finds_problems():
    from lattice.lottie import check, check_file, dotlottie, dumps, image_animation

    good = image_animation(b"\x89PNG fake", 8, 8, 30, 30)
    assert check(good) == []
    assert "missing top-level key 'fr'" in check({k: v for k, v in good.items() if k != "fr"})
    broken = dict(good, assets=[])
    assert check(broken) == ["layer 0 refers to asset 'image_0', which assets[] does not hold"]
    assert check_file(dotlottie(dumps(good))) == []
    assert check_file(b"not json")[0].startswith("not a readable Lottie file")


def test_a_lottie_asset_exports_as_is(media, tmp_path):
    from lattice import lottie

    src = media.root / "anim.json"
    doc = lottie.image_animation(b"\x89PNGx", 10, 10, 24, 48)
    src.write_bytes(lottie.dumps(doc))
    assert run_cli("add", "anim.json", cwd=media.root).code == 0
    out = tmp_path / "a.json"
    assert export(media, "anim.json", "--format", "lottie", "-o", str(out)).code == 0
    assert out.read_bytes() == src.read_bytes()
    assert Path(str(out) + ".lattice.json").exists()  # as is: the recipe cannot go inside


def test_video_to_lottie_is_refused_with_alternatives(media, tmp_path):
    r = export(media, "clip.mp4", "--format", "lottie", "-o", str(tmp_path / "x.json"))
    assert r.code == 4
    assert "clip.mp4 is a video, which cannot become Lottie" in r.err and "--format frames" in r.err
    assert not (tmp_path / "x.json").exists()


def test_the_recipe_is_embedded(media, tmp_path):
    from lattice.export_encode import png_text

    assert export(media, "clip.mp4", "--format", "png", "-o", str(tmp_path / "e.png")).code == 0
    doc = json.loads(png_text((tmp_path / "e.png").read_bytes())["lattice"])
    assert doc["lattice"]["recipe"]["generator"] == "ffmpeg.testsrc"
    assert export(media, "clip.mp4", "--format", "mp4", "-o", str(tmp_path / "e.mp4")).code == 0
    import subprocess

    from lattice.ffmpeg import ffmpeg_exe

    info = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(tmp_path / "e.mp4")], capture_output=True, text=True).stderr
    assert '"generator":"ffmpeg.testsrc"' in info
    assert not Path(str(tmp_path / "e.mp4") + ".lattice.json").exists()


@pytest.mark.parametrize("args, message", [
    (["--format", "avi"], "unknown export format 'avi'"),
    (["--format", "mp4", "--size", "big"], "--size 'big': expected WIDTHxHEIGHT"),
    (["--format", "mp4", "--size", "33x24"], "needs even width and height"),
    (["--format", "mp4", "--range", "3-1"], "--range '3-1': the end must come after the start"),
    (["--format", "mp4", "--range", "soon"], "--range 'soon': expected START-END"),
    (["--format", "mp4", "--fps", "0"], "--fps 0: expected a frame rate"),
    (["--format", "mp4", "-o", ".lattice/x.mp4"], "is inside .lattice/"),
])
def test_bad_input_is_one_clear_line(media, args, message):
    r = export(media, "clip.mp4", *args)
    assert r.code == 4, r.err
    assert r.err.splitlines()[0].startswith("error: ") and message in r.err.splitlines()[0]


def test_output_never_written_through_a_symlink(media, tmp_path):
    victim = tmp_path / "victim.mp4"
    victim.write_bytes(b"precious")
    link = tmp_path / "out.mp4"
    link.symlink_to(victim)
    r = export(media, "clip.mp4", "--format", "mp4", "-o", str(link))
    assert r.code == 4 and "symbolic link" in r.err
    assert victim.read_bytes() == b"precious"


def test_an_export_inside_the_project_is_an_asset_that_can_be_remade(media):
    r = export(media, "clip.mp4", "--format", "gif", "--size", "32x24", "-o", "deliver/c.gif")
    assert r.code == 0, r.err
    assert r.json["asset"] == "deliver/c.gif"
    record = media.record("deliver/c.gif")
    recipe = record.current.recipe
    assert recipe.generator == "lattice.export" and recipe.inputs == ["clip.mp4"]
    oid = record.current.object
    # Evict it (and its source): while its working file holds it, it is taken back from there.
    gc = ["gc", "--keep-versions", "0", "--older-than", "0", "--include-current"]
    assert run_cli(*gc, cwd=media.root).code == 0
    assert not media.objects.has(oid) and not media.objects.has(media.record("clip.mp4").current.object)
    c = run_cli("cat", "deliver/c.gif", cwd=media.root)
    assert (c.code, c.err) == (0, "") and media.objects.has(oid)
    # Without the working files: re-made bit for bit through the queue.
    assert run_cli(*gc, cwd=media.root).code == 0 and not media.objects.has(oid)
    (media.root / "deliver/c.gif").unlink()
    (media.root / "clip.mp4").unlink()
    c = run_cli("cat", "deliver/c.gif", cwd=media.root)
    assert c.code == 0, c.err
    assert "re-making evicted clip.mp4@v1, deliver/c.gif@v1" in c.err
    assert media.objects.has(oid)


def test_evicted_source_is_regenerated_for_export(media, tmp_path):
    assert run_cli("gc", "--keep-versions", "0", "--older-than", "0", "--include-current", cwd=media.root).code == 0
    src = media.record("still.png").current.object
    assert not media.objects.has(src)
    # Its working file still holds it: taken back from there, even with --no-regen.
    kept = export(media, "still.png", "--format", "jpg", "--no-regen", "-o", str(tmp_path / "k.jpg"))
    assert kept.code == 0 and kept.json["regenerated"] == [] and media.objects.has(src), kept.err
    assert run_cli("gc", "--keep-versions", "0", "--older-than", "0", "--include-current", cwd=media.root).code == 0
    (media.root / "still.png").unlink()
    refused = export(media, "still.png", "--format", "jpg", "--no-regen", "-o", str(tmp_path / "n.jpg"))
    assert refused.code == 4 and "lattice render still.png" in refused.err
    r = export(media, "still.png", "--format", "jpg", "-o", str(tmp_path / "s.jpg"))
    assert r.code == 0, r.err
    assert r.json["regenerated"] == ["still.png@v1"] and "re-making evicted still.png@v1" in r.err
    assert probe(tmp_path / "s.jpg").width == 64


def test_frames_export_never_replaces_a_directory_with_other_files(tmp_repo):
    from conftest import run_cli

    r = run_cli("gen", "clip.mp4", "--model", "ffmpeg.testsrc", "--set", "width=32", "--set", "height=24", "--set", "duration=0.2", cwd=tmp_repo.root)
    assert r.code == 0, r.err
    precious = tmp_repo.root / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    r = run_cli("export", "clip.mp4", "--format", "frames", "-o", "precious", cwd=tmp_repo.root)
    assert r.code == 4 and "not frames" in r.err
    assert (precious / "notes.txt").read_text() == "keep me"
    for target in (".", str(tmp_repo.root.parent)):
        r = run_cli("export", "clip.mp4", "--format", "frames", "-o", target, cwd=tmp_repo.root)
        assert r.code == 4 and "would replace" in r.err, r.err
    assert (tmp_repo.dir / "format").exists() and (tmp_repo.root / "clip.mp4").exists()
    # An earlier frame sequence is replaced.
    assert run_cli("export", "clip.mp4", "--format", "frames", "-o", "fr", cwd=tmp_repo.root).code == 0
    assert run_cli("export", "clip.mp4", "--format", "frames", "-o", "fr", cwd=tmp_repo.root).code == 0
    assert all(p.name.startswith("frame_") for p in (tmp_repo.root / "fr").iterdir())


def test_frames_export_never_overwrites_tracked_or_foreign_frames(tmp_repo):
    root = tmp_repo.root
    for name, seed in (("v.mp4", "1"), ("w.mp4", "2")):
        r = run_cli("gen", name, "--model", "ffmpeg.testsrc", "--seed", seed, "--set", "width=32", "--set", "height=24",
                    "--set", "duration=0.4", "--set", "fps=10", cwd=root)
        assert r.code == 0, r.err
    # A tracked asset in the directory, with an unrecorded retouch: refused, both kept.
    tmp_repo.gen({"shots/frame_00001.png": "my hand-painted frame"})
    assert run_cli("add", "shots/frame_00001.png", cwd=root).code == 0
    (root / "shots/frame_00001.png").write_text("my unrecorded retouch")
    r = run_cli("export", "v.mp4", "-o", "shots", "--format", "frames", cwd=root)
    assert r.code == 4 and "holds tracked assets (shots/frame_00001.png)" in r.err, r.err
    assert (root / "shots/frame_00001.png").read_text() == "my unrecorded retouch"
    assert sorted(p.name for p in (root / "shots").iterdir()) == ["frame_00001.png"]
    # Frame-named files no export of this source wrote: refused.
    tmp_repo.gen({"hand/frame_00001.png": "painted"})
    r = run_cli("export", "v.mp4", "-o", "hand", "--format", "frames", cwd=root)
    assert r.code == 4 and "not an earlier frames export of v.mp4" in r.err, r.err
    assert (root / "hand/frame_00001.png").read_text() == "painted"
    # An earlier export of the same source is replaced; another source's is not.
    assert run_cli("export", "v.mp4", "-o", "fr", "--format", "frames", cwd=root).code == 0
    assert run_cli("export", "v.mp4", "-o", "fr", "--format", "frames", cwd=root).code == 0
    r = run_cli("export", "w.mp4", "-o", "fr", "--format", "frames", cwd=root)
    assert r.code == 4 and "not an earlier frames export of w.mp4" in r.err, r.err
    # Frames stay untracked files (README): nothing was recorded for them.
    assert not any(n.startswith(("fr/", "hand/")) for n in tmp_repo.index.names())
    assert json.loads((root / "fr.lattice.json").read_text())["lattice"]["asset"] == "v.mp4"


@pytest.mark.parametrize("source, args", [
    ("still.png", ["--fps", "1", "--range", "0-0.3", "-o", "OUT/s.mp4"]),
    ("still.png", ["--fps", "0.5", "-o", "OUT/s.gif"]),
    ("clip.mp4", ["--fps", "1", "--range", "0-0.3", "-o", "OUT/c.gif"]),
    ("clip.mp4", ["--fps", "2", "--range", "0.1-0.4", "--format", "frames", "-o", "OUT/fr"]),
])
def test_an_export_of_less_than_one_frame_is_refused_not_left_to_hang(media, tmp_path, source, args):
    from conftest import run_proc

    args = [a.replace("OUT", str(tmp_path)) for a in args]
    r = run_proc("export", source, *args, cwd=media.root, timeout=30)  # a still looped too briefly hangs ffmpeg
    assert r.returncode == 4 and "gives no frame: an export needs at least one" in r.stderr, r.stderr
    assert not list(tmp_path.iterdir())


def test_bad_output_paths_are_refused_up_front(tmp_repo, tmp_path):
    from conftest import run_cli

    r = run_cli("gen", "still.png", "--model", "ffmpeg.testsrc", "--set", "width=32", "--set", "height=24", cwd=tmp_repo.root)
    assert r.code == 0, r.err
    (tmp_path / "adir").mkdir()
    cases = [
        (["-o", str(tmp_path / "missing" / "x.png")], "does not exist"),
        (["-o", str(tmp_path / "adir")], "is a directory"),
        (["-o", str(tmp_path / "x.jpg")], "a .jpg name for --format png"),
    ]
    for args, message in cases:
        r = run_cli("export", "still.png", "--format", "png", *args, cwd=tmp_repo.root)
        assert r.code == 4 and message in r.err, (args, r.err)
    assert run_cli("queue", "ls", "--json", cwd=tmp_repo.root).json[0]["type"] != "export"


def test_an_export_never_replaces_another_asset_or_unrecorded_edits(tmp_repo):
    from conftest import run_cli

    r = run_cli("gen", "still.png", "--model", "ffmpeg.testsrc", "--set", "width=32", "--set", "height=24", cwd=tmp_repo.root)
    assert r.code == 0, r.err
    (tmp_repo.root / "mine.png").write_bytes((tmp_repo.root / "still.png").read_bytes() + b"mine")
    assert run_cli("add", "mine.png", cwd=tmp_repo.root).code == 0
    r = run_cli("export", "still.png", "-o", "mine.png", cwd=tmp_repo.root)
    assert r.code == 4 and "mine.png is a tracked asset (imported)" in r.err, r.err
    r = run_cli("gen", "sky.png", "--model", "ffmpeg.mandelbrot", "--set", "width=32", "--set", "height=24", cwd=tmp_repo.root)
    r = run_cli("export", "still.png", "-o", "sky.png", cwd=tmp_repo.root)
    assert r.code == 4 and "sky.png is a tracked asset (made by ffmpeg.mandelbrot)" in r.err, r.err
    assert run_cli("export", "still.png", "-o", "other.png", cwd=tmp_repo.root).code == 0
    assert (tmp_repo.root / "mine.png").read_bytes().endswith(b"mine")
    assert Repository.find(tmp_repo.root).record("mine.png").current.recipe is None
    # An earlier export takes a new version, but never over unrecorded edits.
    with open(tmp_repo.root / "other.png", "ab") as f:
        f.write(b"edit")
    r = run_cli("export", "still.png", "-o", "other.png", "--size", "16x12", cwd=tmp_repo.root)
    assert r.code == 12 and "other.png holds unrecorded changes" in r.err, r.err
    assert (tmp_repo.root / "other.png").read_bytes().endswith(b"edit")
    assert run_cli("checkout", "other.png", cwd=tmp_repo.root).code == 0
    r = run_cli("export", "still.png", "-o", "other.png", "--size", "16x12", cwd=tmp_repo.root)
    assert r.code == 0, r.err
    assert len(Repository.find(tmp_repo.root).record("other.png").versions) == 2


def _clip(repo, name="v.mp4", seed="1"):
    r = run_cli("gen", name, "--model", "ffmpeg.testsrc", "--seed", seed, "--set", "width=32", "--set", "height=24",
                "--set", "duration=0.2", "--set", "fps=10", cwd=repo.root)
    assert r.code == 0, r.err


def _no_export_queued(repo):
    return all(j["type"] != "export" for j in run_cli("queue", "ls", "--json", cwd=repo.root).json)


def test_an_export_replaces_only_a_sidecar_an_earlier_export_of_the_asset_wrote(tmp_repo, tmp_path):
    root = tmp_repo.root
    _clip(tmp_repo)
    _clip(tmp_repo, "w.mp4", "2")
    tmp_repo.gen({"shots.lattice.json": "my notes\n", "other.lattice.json": "untracked precious\n"})
    assert run_cli("add", "shots.lattice.json", cwd=root).code == 0
    for out, what in (("shots", "is a tracked asset"), ("other", "is not the sidecar of an earlier frames export of v.mp4")):
        r = run_cli("export", "v.mp4", "-f", "frames", "-o", out, cwd=root)
        assert r.code == 4 and f"{out}.lattice.json exists and {what}" in r.err, r.err
        assert r.err.startswith("error: ") and "hint: " in r.err and not (root / out).exists()
    assert (root / "shots.lattice.json").read_text() == "my notes\n"
    assert (root / "other.lattice.json").read_text() == "untracked precious\n"
    # The same rule for a file outside the project whose recipe goes beside it.
    side = tmp_path / "o.gif.lattice.json"
    side.write_text("precious\n")
    r = run_cli("export", "v.mp4", "-o", str(tmp_path / "o.gif"), cwd=root)
    assert r.code == 4 and "o.gif.lattice.json exists and is not the sidecar of an earlier export of v.mp4" in r.err, r.err
    assert side.read_text() == "precious\n" and not (tmp_path / "o.gif").exists()
    side.unlink()
    for _ in range(2):  # its own sidecar is replaced
        assert run_cli("export", "v.mp4", "-o", str(tmp_path / "o.gif"), cwd=root).code == 0
    r = run_cli("export", "w.mp4", "-o", str(tmp_path / "o.gif"), cwd=root)
    assert r.code == 4 and "not the sidecar of an earlier export of w.mp4" in r.err, r.err
    assert json.loads(side.read_text())["lattice"]["asset"] == "v.mp4"
    assert len(run_cli("queue", "ls", "--json", cwd=root).json) == 4  # two clips, two exports: no refused one queued


def test_a_path_an_export_cannot_use_is_refused_before_any_job(tmp_repo, tmp_path):
    """Under a file, or a name too long: one error line naming the path,
    exit 4, no job queued and no asset recorded."""
    root, outside = tmp_repo.root, tmp_path / "outside"
    outside.mkdir()
    _clip(tmp_repo)
    tmp_repo.gen({"notes.txt": "hi\n"})
    cases = [
        (["-o", "v.mp4/x.png"], "v.mp4/x.png: v.mp4 is a file, so nothing can be created under it"),
        (["-o", "notes.txt/y.png"], "notes.txt/y.png: notes.txt is a file, so nothing can be created under it"),
        (["-f", "frames", "-o", "v.mp4/fr"], "v.mp4/fr: v.mp4 is a file"),
        (["-f", "frames", "-o", "x" * 252], "longer than the 255 bytes a file system allows"),
        (["-o", str(outside / ("x" * 250 + ".gif"))], "(with its .lattice.json sidecar) is longer than"),
        (["-o", str(outside / ("a" * 252 + ".gif"))], "a name is longer than the 255 bytes"),
        (["-o", "b" * 260 + ".png"], "a name is longer than the 255 bytes"),
        (["-o", str(root / "notes.txt" / "z.png")], "notes.txt/z.png: notes.txt is a file"),
    ]
    for args, message in cases:
        r = run_cli("export", "v.mp4", *args, cwd=root)
        assert r.code == 4 and message in r.err and len(r.err.splitlines()) <= 2, (args, r.err)
    assert sorted(tmp_repo.index.names()) == ["v.mp4"]
    assert _no_export_queued(tmp_repo) and not list(outside.iterdir())
    # A long name that fits, with the sidecar and the temporary folder beside it.
    r = run_cli("export", "v.mp4", "-f", "frames", "-o", "f" * 242, cwd=root)
    assert r.code == 0, r.err
    assert (root / ("f" * 242 + ".lattice.json")).exists()


def test_the_export_generator_checks_its_parameters_wherever_it_runs_from(tmp_repo):
    """gen and regen pass through the same checks as `lattice export`: the
    format must suit the name, and mp4 needs even sides, before any job."""
    root = tmp_repo.root
    _clip(tmp_repo)
    assert run_cli("export", "v.mp4", "-o", "v.gif", cwd=root).code == 0
    before = (root / "v.gif").read_bytes()
    cases = [
        (["regen", "v.gif", "--set", "format=webm"], "a .gif name for format webm"),
        (["gen", "y.gif", "--model", "lattice.export", "-i", "v.mp4"], "a .gif name for format mp4"),
        (["gen", "z.mp4", "--model", "lattice.export", "-i", "v.mp4", "--set", "format=mp4", "--set", "width=33",
          "--set", "height=17"], "33x17: mp4 needs even width and height"),
        (["gen", "s.wav", "--model", "lattice.export", "-i", "v.mp4", "--set", "format=wav"], "v.mp4 has no audio stream"),
        (["gen", "w.mp4", "--model", "lattice.export", "-i", "v.mp4", "--set", "source_kind=image"],
         "v.mp4 is a video, but source_kind is image"),
    ]
    for args, message in cases:
        r = run_cli(*args, cwd=root)
        assert r.code == 4 and message in r.err.splitlines()[0], (args, r.err)
    assert (root / "v.gif").read_bytes() == before and len(tmp_repo.record("v.gif").versions) == 1
    assert sorted(tmp_repo.index.names()) == ["v.gif", "v.mp4"]
    assert len(run_cli("queue", "ls", "--json", cwd=root).json) == 2  # the clip and the first export


def test_gen_of_an_export_must_say_what_its_source_is(tmp_repo):
    """`gen --model lattice.export` on a still: left at its default
    (video), source_kind is refused, not encoded as one frame; set right,
    the clip is the one `lattice export` makes."""
    root = tmp_repo.root
    r = run_cli("gen", "still.png", "--model", "ffmpeg.testsrc", "--seed", "1", "--set", "width=32", "--set", "height=24", cwd=root)
    assert r.code == 0, r.err
    r = run_cli("gen", "a.mp4", "--model", "lattice.export", "-i", "still.png", "--set", "format=mp4", cwd=root)
    assert r.code == 4 and "still.png is an image, but source_kind is video" in r.err and "source_kind=image" in r.err
    assert "a.mp4" not in tmp_repo.index.names()
    r = run_cli("gen", "a.mp4", "--model", "lattice.export", "-i", "still.png", "--set", "format=mp4",
                "--set", "source_kind=image", cwd=root)
    assert r.code == 0, r.err
    assert run_cli("export", "still.png", "-o", "b.mp4", cwd=root).code == 0
    made, exported = (tmp_repo.record(n).current.media for n in ("a.mp4", "b.mp4"))  # export embeds its recipe: bytes differ
    assert made == exported and made["frames"] > 1


def _recorded(repo, path):
    return Repository.find(repo.root).index.export_stat(str(path))


def test_an_export_outside_the_project_never_overwrites_a_file_it_did_not_write(tmp_repo, tmp_path):
    """A typo in -o must not cost the user a file: only what an earlier
    export from this repository wrote, unchanged since, is replaced, and
    anything else only with --force."""
    root = tmp_repo.root
    _clip(tmp_repo)
    out = tmp_path / "final.mp4"
    out.write_bytes(b"my own cut")
    r = run_cli("export", "v.mp4", "-o", str(out), cwd=root)
    assert r.code == 4, r.err
    error, hint = r.err.splitlines()
    assert error == f"error: {out} already exists and no earlier export wrote it; exporting would overwrite it"
    assert hint.startswith("hint: ") and "--force" in hint
    assert out.read_bytes() == b"my own cut" and _recorded(tmp_repo, out) is None
    assert _no_export_queued(tmp_repo) and sorted(p.name for p in tmp_path.iterdir()) == ["final.mp4", "proj"]
    r = export(tmp_repo, "v.mp4", "-o", str(out), "--force")
    assert r.code == 0 and r.json["output"] == str(out), r.err
    assert probe(out).kind == "video" and _recorded(tmp_repo, out) is not None
    # Its own export is replaced without --force, however -o names it.
    for name in (str(out), os.path.relpath(out, root)):
        r = export(tmp_repo, "v.mp4", "-o", name, "--size", "16x12")
        assert r.code == 0 and r.json["output"] == str(out), r.err
    assert probe(out).width == 16
    # ...but not once the user has changed it.
    with open(out, "ab") as f:
        f.write(b"my edit")
    r = run_cli("export", "v.mp4", "-o", str(out), cwd=root)
    assert r.code == 4 and f"error: {out} has changed since an earlier export wrote it" in r.err, r.err
    assert out.read_bytes().endswith(b"my edit")
    assert len(run_cli("queue", "ls", "--json", cwd=root).json) == 4  # the clip and three exports


def test_a_file_that_appears_while_the_export_waits_is_not_overwritten(tmp_repo, tmp_path, monkeypatch):
    """The job checks again when it puts the file in place: the user's file
    saved after `lattice export` looked is kept, and no temp is left."""
    import lattice.remake

    _clip(tmp_repo)
    out = tmp_path / "late.gif"
    ensure_present = lattice.remake.ensure_present

    def user_saves_meanwhile(*args, **kwargs):  # runs after the up-front checks, before the job
        out.write_bytes(b"saved meanwhile")
        return ensure_present(*args, **kwargs)

    monkeypatch.setattr(lattice.remake, "ensure_present", user_saves_meanwhile)
    r = run_cli("export", "v.mp4", "-o", str(out), cwd=tmp_repo.root)
    assert r.code == 4 and "late.gif already exists and no earlier export wrote it" in r.err, r.err
    assert out.read_bytes() == b"saved meanwhile" and _recorded(tmp_repo, out) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["late.gif", "proj"]  # no temp, no sidecar


def test_force_never_replaces_a_link_folder_or_special_file(tmp_repo, tmp_path):
    _clip(tmp_repo)
    victim = tmp_path / "victim.mp4"
    victim.write_bytes(b"precious")
    (tmp_path / "link.mp4").symlink_to(victim)
    (tmp_path / "dir.mp4").mkdir()
    os.mkfifo(tmp_path / "fifo.mp4")
    for name, message in (("link.mp4", "symbolic link"), ("dir.mp4", "is a directory"), ("fifo.mp4", "is not a regular file")):
        r = run_cli("export", "v.mp4", "-o", str(tmp_path / name), "--force", cwd=tmp_repo.root)
        assert r.code == 4 and message in r.err, (name, r.err)
    assert victim.read_bytes() == b"precious" and _no_export_queued(tmp_repo)


def test_an_output_folder_the_filesystem_refuses_exits_13_before_any_job(tmp_repo, tmp_path, monkeypatch):
    """A folder that takes no new file (read-only, no permission, or /proc,
    where a create fails with ENOENT): exit 13 up front, the folder named,
    no job queued and nothing left there; a file where the folder belongs
    is invalid input, with a hint that fits."""
    import errno

    import lattice.fsutil

    _clip(tmp_repo)
    root = tmp_repo.root
    if os.path.isdir("/proc/self"):
        r = run_cli("export", "v.mp4", "-o", "/proc/x.gif", cwd=root)
        assert r.code == 13, r.err
        error, hint = r.err.splitlines()
        assert error == "error: -o /proc/x.gif: /proc: the filesystem takes no new files there (No such file or directory)"
        assert hint.startswith("hint: name an output")
    (tmp_path / "ro").mkdir()
    create_temp = lattice.fsutil.create_temp

    def read_only(directory, *args, **kwargs):  # as a read-only mount answers, for root too
        if str(directory) == str(tmp_path / "ro"):
            raise OSError(errno.EROFS, "Read-only file system", f"{directory}/.x.tmp-1-1.gif")
        return create_temp(directory, *args, **kwargs)

    monkeypatch.setattr(lattice.fsutil, "create_temp", read_only)
    r = run_cli("export", "v.mp4", "-o", str(tmp_path / "ro" / "x.gif"), cwd=root)
    assert r.code == 13, r.err
    error, hint = r.err.splitlines()
    assert error == f"error: -o {tmp_path / 'ro' / 'x.gif'}: {tmp_path / 'ro'}: read-only filesystem"
    assert hint == "hint: name an output on storage you may write to, or remount it read-write"
    (tmp_path / "f").write_bytes(b"a file")
    r = run_cli("export", "v.mp4", "-o", str(tmp_path / "f" / "x.gif"), cwd=root)
    assert r.code == 4 and f"the folder {tmp_path / 'f'} is a file, so nothing can be created under it" in r.err, r.err
    assert "create it first" not in r.err and "hint: " in r.err
    assert _no_export_queued(tmp_repo)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f", "proj", "ro"] and not list((tmp_path / "ro").iterdir())
    assert [p.name for p in root.iterdir() if p.name != ".lattice"] == ["v.mp4"]  # the probe leaves nothing


def test_an_export_job_that_may_not_create_its_file_fails_once_with_exit_13(tmp_repo, monkeypatch):
    """Should the folder refuse only once the job runs, the job is not
    retried (a refusal repeats) and the export exits 13, not 8."""
    import lattice.export_target

    if not os.path.isdir("/proc/self"):
        pytest.skip("no /proc here")
    _clip(tmp_repo)
    monkeypatch.setattr(lattice.export_target, "_check_writable", lambda out, folder: None)
    r = run_cli("export", "v.mp4", "-o", "/proc/x.gif", cwd=tmp_repo.root)
    assert r.code == 13 and "/proc: the filesystem takes no new files there" in r.err, r.err
    [job] = [j for j in run_cli("queue", "ls", "--json", cwd=tmp_repo.root).json if j["type"] == "export"]
    assert job["state"] == "failed" and job["attempts"] == 1, job


# -- an unreadable source, still-format options, leftovers of a killed export ------------


def test_an_unreadable_image_is_refused_up_front_not_left_to_spin(tmp_repo, tmp_path):
    """16 bytes of text named .png: `add` warns, and every export of it
    (and `gen` of one) is refused before any job; ffmpeg used to loop the
    undecodable still at full CPU until the job timed out, three times."""
    from conftest import run_proc

    root = tmp_repo.gen({"g.png": "not a png at all"}).root
    outside = tmp_path / "out"
    outside.mkdir()
    r = run_proc("add", "g.png", cwd=root, timeout=30)
    assert r.returncode == 0 and "g.png: no image ffmpeg can read" in r.stderr, r.stderr
    assert "frames" not in tmp_repo.record("g.png").current.media  # not "one frame": nothing decodes
    for fmt in ("gif", "webm", "mp4", "png", "frames", "lottie"):
        out = outside / ("g-frames" if fmt == "frames" else f"g.{'json' if fmt == 'lottie' else fmt}")
        r = run_proc("export", "g.png", "--format", fmt, "-o", str(out), cwd=root, timeout=30)
        assert r.returncode == 4 and "g.png has no picture ffmpeg can read" in r.stderr, (fmt, r.stderr)
        assert "hint: replace it with a readable image" in r.stderr
    r = run_proc("gen", "ex.gif", "-m", "lattice.export", "-i", "g.png", "--set", "format=gif",
                 "--set", "source_kind=image", cwd=root, timeout=30)
    assert r.returncode == 4 and "g.png has no picture ffmpeg can read" in r.stderr, r.stderr
    assert not list(outside.iterdir()) and "ex.gif" not in tmp_repo.index.names()
    assert run_cli("queue", "ls", "--json", cwd=root).json == []


@pytest.mark.parametrize("fmt", ["gif", "mp4", "webm", "png", "frames", "lottie"])
def test_an_undecodable_still_fails_the_encode_at_once_and_for_good(tmp_path, fmt):
    """Past the up-front check (facts recorded before it existed, a file
    changed under a queued job), the encode itself stops at the first
    decode error, as a failure that is not retried (not transient)."""
    import time

    from lattice.errors import GeneratorFailed
    from lattice.export import ExportGenerator
    from lattice.export_encode import encode

    src = tmp_path / "g.png"
    src.write_text("not a png at all")
    p = ExportGenerator().normalize({"format": fmt, "source_kind": "image"})
    out = tmp_path / ("frames" if fmt == "frames" else f"out.{'json' if fmt == 'lottie' else fmt}")
    start = time.monotonic()
    with pytest.raises(GeneratorFailed, match="Invalid PNG signature") as e:
        encode(src, out, p, timeout=60)
    assert time.monotonic() - start < 20 and not e.value.transient


def test_a_video_with_no_sound_to_export_as_audio_says_what_to_do(media, tmp_path):
    r = export(media, "clip.mp4", "-o", str(tmp_path / "x.wav"))
    assert r.code == 4 and "clip.mp4 has no audio stream to export as wav" in r.err
    assert r.err.splitlines()[1].startswith("hint: ")


@pytest.mark.parametrize("args", [["--range", "0-1"], ["--fps", "10"], ["--range", "0-1", "--fps", "10"]])
@pytest.mark.parametrize("fmt", ["png", "jpg", "webp"])
def test_a_range_or_frame_rate_for_a_still_exported_as_a_still_is_refused(media, tmp_path, args, fmt):
    r = export(media, "still.png", "-o", str(tmp_path / f"x.{fmt}"), *args)
    assert r.code == 4 and "a range and a frame rate do not apply" in r.err.splitlines()[0], r.err
    assert r.err.splitlines()[1].startswith("hint: leave --range and --fps out")
    assert not list(tmp_path.iterdir())
    r = run_cli("gen", f"s2.{fmt}", "-m", "lattice.export", "-i", "still.png", "--set", f"format={fmt}",
                "--set", "source_kind=image", "--set", "fps=10", cwd=media.root)
    assert r.code == 4 and "a range and a frame rate do not apply" in r.err, r.err


def test_an_export_removes_what_a_killed_export_to_the_same_name_left(media, tmp_path):
    """A SIGKILLed export leaves `.g.tmp-PID-N.gif` beside its output; the
    next export to that name removes it once its process is gone and it
    has sat untouched an hour, and leaves alone any other temp: a live
    process's, a fresh one (maybe another machine's on a shared folder),
    another name's."""
    import subprocess
    import sys

    from lattice.export_target import STALE_TEMP_AGE

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead, live = child.pid, os.getpid()
    old = os.stat(tmp_path).st_mtime - STALE_TEMP_AGE - 60
    files = {f".g.tmp-{dead}-1.gif": old, f".g.tmp-{live}-3.gif": old, f".g.tmp-{dead}-2.gif": None,
             f".h.tmp-{dead}-1.gif": old, f".g.tmp-{dead}-1.mp4": old, "g.tmp-1-1.gif": old}
    for name, mtime in files.items():
        (tmp_path / name).write_bytes(b"half an export")
        if mtime:
            os.utime(tmp_path / name, (mtime, mtime))
    r = export(media, "still.png", "-o", str(tmp_path / "g.gif"))
    assert r.code == 0, r.err
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted({*files, "g.gif", "g.gif.lattice.json"} - {f".g.tmp-{dead}-1.gif"})


def test_force_replaces_a_sidecar_it_did_not_write_as_it_replaces_the_file(tmp_repo, tmp_path):
    """--force replaces the user's file at -o; the recipe's sidecar beside
    it is as much the output, so --force replaces a user's file there too
    (never a link or a folder), and without it the refusal says so."""
    root = tmp_repo.root
    _clip(tmp_repo)
    out, side = tmp_path / "o.gif", tmp_path / "o.gif.lattice.json"
    side.write_text("my notes\n")
    r = run_cli("export", "v.mp4", "-o", str(out), cwd=root)
    assert r.code == 4, r.err
    error, hint = r.err.splitlines()
    assert error.startswith("error: ") and "o.gif.lattice.json exists and is not the sidecar of an earlier export" in error
    assert hint.startswith("hint: ") and "--force" in hint
    assert side.read_text() == "my notes\n" and not out.exists() and _no_export_queued(tmp_repo)
    r = export(tmp_repo, "v.mp4", "-o", str(out), "--force")
    assert r.code == 0 and r.json["sidecar"] == str(side), r.err
    assert json.loads(side.read_text())["lattice"]["asset"] == "v.mp4" and _recorded(tmp_repo, out) is not None
    # Never a link (nor what it points at) or a folder, --force or not.
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (tmp_path / "l.gif.lattice.json").symlink_to(victim)
    (tmp_path / "d.gif.lattice.json").mkdir()
    for name, what in (("l.gif", "is a symbolic link"), ("d.gif", "is not a regular file")):
        r = run_cli("export", "v.mp4", "-o", str(tmp_path / name), "--force", cwd=root)
        assert r.code == 4 and f"{name}.lattice.json exists and {what}" in r.err and "--force" not in r.err, r.err
        assert not (tmp_path / name).exists()
    assert victim.read_text() == "precious\n"
    # A frames export replaces only an earlier frames export, so its sidecar too.
    (tmp_path / "f.lattice.json").write_text("my notes\n")
    r = run_cli("export", "v.mp4", "-f", "frames", "-o", str(tmp_path / "f"), "--force", cwd=root)
    assert r.code == 4 and "f.lattice.json exists and is not the sidecar of an earlier frames export" in r.err, r.err
    assert (tmp_path / "f.lattice.json").read_text() == "my notes\n"


def test_a_sidecar_that_appears_while_the_export_waits_is_not_overwritten(tmp_repo, tmp_path, monkeypatch):
    """The job checks the sidecar again when it puts the file in place, as
    it checks the file: a user's file saved there meanwhile is kept."""
    import lattice.remake

    _clip(tmp_repo)
    out, side = tmp_path / "late.gif", tmp_path / "late.gif.lattice.json"
    ensure_present = lattice.remake.ensure_present

    def user_saves_meanwhile(*args, **kwargs):  # runs after the up-front checks, before the job
        side.write_text("saved meanwhile\n")
        return ensure_present(*args, **kwargs)

    monkeypatch.setattr(lattice.remake, "ensure_present", user_saves_meanwhile)
    r = run_cli("export", "v.mp4", "-o", str(out), cwd=tmp_repo.root)
    assert r.code == 4 and "late.gif.lattice.json exists and is not the sidecar of an earlier export" in r.err, r.err
    assert side.read_text() == "saved meanwhile\n" and _recorded(tmp_repo, out) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["late.gif.lattice.json", "proj"]  # no file, no temp


@pytest.mark.parametrize("meanwhile", ["a note saved into it", "a file in its place", "a link in its place"])
def test_a_frames_directory_changed_while_the_export_waits_is_not_replaced(tmp_repo, tmp_path, monkeypatch, meanwhile):
    """The frames job checks the directory again when it swaps the new
    frames in (under the index lock, as place_outside does for a file): what
    the user put there after `lattice export` looked is never removed."""
    import shutil

    import lattice.remake

    _clip(tmp_repo)
    out, note, mine = tmp_path / "fr", tmp_path / "fr" / "notes.txt", tmp_path / "mine"
    mine.mkdir()
    assert run_cli("export", "v.mp4", "-f", "frames", "-o", str(out), cwd=tmp_repo.root).code == 0
    frames = sorted(p.name for p in out.iterdir())
    ensure_present = lattice.remake.ensure_present

    def user_changes_it_meanwhile(*args, **kwargs):  # runs after the up-front checks, before the job
        if meanwhile == "a note saved into it":
            note.write_text("precious\n")
        else:
            shutil.rmtree(out)
            out.write_text("precious\n") if meanwhile == "a file in its place" else out.symlink_to(mine)
        return ensure_present(*args, **kwargs)

    monkeypatch.setattr(lattice.remake, "ensure_present", user_changes_it_meanwhile)
    r = run_cli("export", "v.mp4", "-f", "frames", "-o", str(out), cwd=tmp_repo.root)
    assert r.code == 4, r.err
    if meanwhile == "a note saved into it":
        assert "holds files that are not frames (notes.txt)" in r.err, r.err
        assert note.read_text() == "precious\n" and sorted(p.name for p in out.iterdir()) == sorted(frames + ["notes.txt"])
    elif meanwhile == "a file in its place":
        assert "exists and is not a directory" in r.err and out.read_text() == "precious\n", r.err
    else:
        assert "symbolic link" in r.err and out.is_symlink() and list(mine.iterdir()) == [], r.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fr", "fr.lattice.json", "mine", "proj"]  # no temp left


def test_gc_forgets_the_records_of_exported_files_gone_or_changed(tmp_repo, tmp_path):
    """The index records each file an export wrote outside the project; gc
    forgets those that can no longer match (deleted, edited, replaced by
    the user), and keeps the rest: a file still as written, and one whose
    whole folder is missing (maybe a disk not mounted now)."""
    import shutil

    root = tmp_repo.root
    _clip(tmp_repo)
    (tmp_path / "disk").mkdir()
    outs = {k: tmp_path / f"{k}.mp4" for k in ("gone", "edited", "replaced", "kept")}
    outs["unmounted"] = tmp_path / "disk" / "u.mp4"
    for out in outs.values():
        assert run_cli("export", "v.mp4", "-o", str(out), cwd=root).code == 0
    outs["gone"].unlink()
    with open(outs["edited"], "ab") as f:
        f.write(b"my edit")
    outs["replaced"].unlink()
    outs["replaced"].write_bytes(b"my own cut")
    shutil.rmtree(tmp_path / "disk")
    r = run_cli("gc", "--dry-run", "--json", cwd=root)
    assert r.code == 0 and r.json["exports_forgotten"] == 3, r.err
    assert all(_recorded(tmp_repo, out) for out in outs.values())  # a dry run forgets nothing
    r = run_cli("gc", "--json", cwd=root)
    assert r.code == 0 and r.json["exports_forgotten"] == 3, r.err
    assert {k for k, out in outs.items() if _recorded(tmp_repo, out)} == {"kept", "unmounted"}
    assert outs["edited"].read_bytes().endswith(b"my edit") and outs["replaced"].read_bytes() == b"my own cut"
    assert run_cli("export", "v.mp4", "-o", str(outs["kept"]), "--size", "16x12", cwd=root).code == 0  # still ours
    r = run_cli("export", "v.mp4", "-o", str(outs["edited"]), cwd=root)
    assert r.code == 4 and "already exists and no earlier export wrote it" in r.err, r.err
    # A record is forgotten only while it is still the one gc found stale:
    # an export that wrote the file anew meanwhile keeps its own.
    index = Repository.find(root).index
    [old] = [row for row in index.export_rows() if row[0] == str(outs["kept"])]
    os.utime(outs["kept"], ns=(1, 1))
    assert run_cli("export", "v.mp4", "-o", str(outs["kept"]), "--force", cwd=root).code == 0
    assert index.drop_exports([old]) == 0 and _recorded(tmp_repo, outs["kept"]) is not None
    assert run_cli("gc", "--json", cwd=root).json["exports_forgotten"] == 0


def test_an_export_counts_as_a_use_of_its_source_in_gcs_least_recently_used_order(tmp_repo, tmp_path):
    """cat and checkout record the use of what they read; export did not,
    so an asset exported every day went first under a size cap."""
    root = tmp_repo.root
    for pattern in ("testsrc", "smptebars", "rgbtestsrc", "testsrc2"):
        r = run_cli("gen", "s.png", "--model", "ffmpeg.testsrc", "--set", "width=32", "--set", "height=24",
                    "--set", f"pattern={pattern}", cwd=root)
        assert r.code == 0, r.err
    v1, v2, v3, v4 = (v.object for v in tmp_repo.record("s.png").versions)
    assert run_cli("pin", "s.png@v1", cwd=root).code == 0  # export writes the pinned version
    assert run_cli("export", "s.png", "-o", str(tmp_path / "s.png"), cwd=root).code == 0
    assert run_cli("unpin", "s.png", cwd=root).code == 0
    size = {o: tmp_repo.objects.stored_size(o) for o in (v1, v2, v3, v4)}
    r = run_cli("gc", "--dry-run", "--json", "--max-size", str(sum(size.values()) - size[v2] - size[v3]), cwd=root)
    assert r.code == 0 and [e["object"] for e in r.json["evictions"]] == [v2, v3], r.out  # v1, exported last, stays


def test_gc_sweeps_what_killed_exports_left_beside_the_files_exports_wrote(tmp_repo, tmp_path):
    """A killed export's temp beside a file exports wrote outside the
    project goes at the next gc, by export's own rule (its name for that
    output, its process gone, untouched for an hour), not only at the next
    export to that name; nothing else there is touched."""
    import subprocess
    import sys

    from lattice.export_target import STALE_TEMP_AGE

    root = tmp_repo.root
    _clip(tmp_repo)
    assert run_cli("export", "v.mp4", "-o", str(tmp_path / "g.mp4"), cwd=root).code == 0
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead, live = child.pid, os.getpid()
    old = os.stat(tmp_path).st_mtime - STALE_TEMP_AGE - 60
    files = {f".g.tmp-{dead}-1.mp4": old, f".g.tmp-{live}-3.mp4": old, f".g.tmp-{dead}-2.mp4": None,
             f".h.tmp-{dead}-1.mp4": old, f".g.tmp-{dead}-1.gif": old, "g.tmp-1-1.mp4": old, f".g.tmp-{dead}-4.mp4.x": old}
    for name, mtime in files.items():
        (tmp_path / name).write_bytes(b"half an export")
        if mtime:
            os.utime(tmp_path / name, (mtime, mtime))
    stale = str(tmp_path / f".g.tmp-{dead}-1.mp4")
    r = run_cli("gc", "--dry-run", "--json", cwd=root)
    assert r.code == 0 and stale in r.json["temps"] and r.json["temp_bytes"] >= len(b"half an export"), r.err
    assert os.path.exists(stale)
    r = run_cli("gc", "--json", cwd=root)
    assert r.code == 0 and stale in r.json["temps"], r.err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({*files, "g.mp4", "proj"} - {os.path.basename(stale)})


def test_stale_temps_match_only_the_names_export_gives_its_temps(tmp_path):
    """temp_path_near's name for an output, `.{stem}.tmp-{pid}-{n}{suffix}`,
    whatever the stem holds (dots, the temp mark itself, no suffix)."""
    import subprocess
    import sys

    from lattice.export_target import STALE_TEMP_AGE, stale_temps
    from lattice.fsutil import temp_path_near

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead = child.pid
    outs = [tmp_path / n for n in ("a.b.gif", "x.tmp-1-2.mp4", "noext")]
    made = [temp_path_near(out) for out in outs]  # named by this (live) process
    names = [f".a.b.tmp-{dead}-1.gif", f".x.tmp-1-2.tmp-{dead}-1.mp4", f".noext.tmp-{dead}-1",
             f".a.tmp-{dead}-1.gif", f".noext.tmp-{dead}-1.png", f".a.b.tmp-{dead}-1.gif.frame.png", f"a.b.tmp-{dead}-1.gif"]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    now = os.stat(tmp_path).st_mtime + STALE_TEMP_AGE + 60
    assert [p.name for p in stale_temps(outs, now)] == sorted(names[:3])
    assert all(p.exists() for p in made)


def test_stale_temps_match_the_cut_names_of_long_outputs(tmp_path, monkeypatch):
    """create_temp cuts `.{stem}` so that a long output's temp name fits 255
    bytes: a killed export of such an output leaves that cut name, which gc
    and the next export sweep too; a shorter cut, or one of another stem, is
    not theirs."""
    import subprocess
    import sys

    import lattice.fsutil
    from lattice.export_target import STALE_TEMP_AGE, stale_temps
    from lattice.fsutil import temp_path_near

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    outs = [tmp_path / ("é" * 120 + ".png"), tmp_path / ("x" * 245 + ".gif")]  # 244 and 249 bytes: legal names
    monkeypatch.setattr(lattice.fsutil, "_pid", child.pid)  # named as the killed export named them
    made = [temp_path_near(out) for out in outs]
    assert all(len(p.name.encode()) > 250 and not p.name.startswith("." + out.stem) for p, out in zip(made, outs))
    tail = f".tmp-{child.pid}-9.png"
    others = ["." + "é" * 100 + tail, "." + "e" * 120 + tail]
    for name in others:
        (tmp_path / name).write_bytes(b"")
    now = os.stat(tmp_path).st_mtime + STALE_TEMP_AGE + 60
    assert stale_temps(outs, now) == sorted(made)


# -- media kinds end to end: what add records, what export makes of it -------------------


@pytest.mark.parametrize("name, args", [("a.png", ["-plays", "0", "-f", "apng"]), ("a.webp", ["-c:v", "libwebp", "-loop", "0"])])
def test_an_animated_png_or_webp_is_probed_and_exports_every_frame(tmp_repo, tmp_path, name, args):
    """ffmpeg's apng and webp_anim demuxers were not whitelisted: nothing
    was recorded and every export was refused; their length now comes from
    their chunks (ffmpeg prints none), so they export as animations."""
    root = tmp_repo.root
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=32x24:rate=10", "-t", "0.5", *args, str(root / name))
    r = run_cli("add", name, cwd=root)
    assert r.code == 0 and "no image ffmpeg can read" not in r.err, r.err
    media = tmp_repo.record(name).current.media
    assert (media["width"], media["height"], media["frames"], media["duration"], media["fps"]) == (32, 24, 5, 0.5, 10.0)
    out = tmp_path / "frames"
    assert export(tmp_repo, name, "--format", "frames", "-o", str(out)).code == 0
    assert len(list(out.glob("frame_*.png"))) == 5
    assert export(tmp_repo, name, "-o", str(tmp_path / "a.gif")).code == 0
    assert decoded_frames(tmp_path / "a.gif") == 5


def test_a_gif_is_recorded_with_the_frames_ffmpeg_decodes(tmp_repo, tmp_path):
    """48 frames at 24 fps (delays of 4 and 5 hundredths) were recorded as
    50 frames at 25 fps, so `ffmpeg.frame` took frames 48 and 49; a single
    frame was a clip of 1/10 s. Now the frames and delays are read from the
    GIF's blocks, one frame is a still as a PNG is (and exports as one), and
    a GIF cut short is recorded as ffmpeg's probe says, as before."""
    from lattice.ffmpeg import _probe_ffmpeg
    from lattice.produce import media_facts

    root = tmp_repo.root
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=24", "-frames:v", "48", str(root / "anim.gif"))
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=32x24:rate=10", "-frames:v", "1", str(root / "one.gif"))
    data = (root / "anim.gif").read_bytes()
    (root / "cut.gif").write_bytes(data[: len(data) // 2])
    before = media_facts(root / "cut.gif")
    r = run_cli("add", "anim.gif", "one.gif", "cut.gif", cwd=root)
    assert r.code == 0 and "ffmpeg can read" not in r.err, r.err
    shown = {name: run_cli("show", name, "--json", cwd=root).json["versions"][0]["media"]
             for name in ("anim.gif", "one.gif", "cut.gif")}
    assert shown["anim.gif"] == {"width": 64, "height": 48, "duration": 2.0, "fps": 24.0, "frames": 48, "codec": "gif"}
    assert shown["one.gif"] == {"width": 32, "height": 24, "frames": 1, "codec": "gif"}
    assert shown["cut.gif"] == before == {k: v for k, v in msgspec_builtins(_probe_ffmpeg(root / "cut.gif", "image", 0)).items()
                                          if k not in ("kind", "size")}
    r = run_cli("gen", "f.png", "--model", "ffmpeg.frame", "-i", "anim.gif", "--set", "index=48", cwd=root)
    assert r.code == 4 and "anim.gif has 48 frames; there is no frame 48" in r.err, r.err
    assert run_cli("gen", "f.png", "--model", "ffmpeg.frame", "-i", "anim.gif", "--set", "index=47", cwd=root).code == 0
    assert export(tmp_repo, "anim.gif", "-o", str(tmp_path / "anim.mp4")).code == 0
    assert decoded_frames(tmp_path / "anim.mp4") == 48
    # A still GIF exports as a PNG does: a second at 25 fps (the gif demuxer has no -loop: image2 reads it).
    for fmt in ("mp4", "gif"):
        r = export(tmp_repo, "one.gif", "-o", str(tmp_path / f"one.{fmt}"))
        assert r.code == 0, r.err
        assert decoded_frames(tmp_path / f"one.{fmt}") == 25


def msgspec_builtins(info):
    import msgspec

    return msgspec.to_builtins(info)


def test_media_facts_recorded_before_are_kept_and_never_compared(tmp_repo, tmp_path, monkeypatch):
    """Facts are probed once, when a version is recorded: an asset added
    before GIFs were walked keeps its estimate (50 frames at 25 fps), and
    fsck, status, add and export take it as it is."""
    from lattice import imagehead

    root = tmp_repo.root
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=24", "-frames:v", "48", str(root / "anim.gif"))
    with monkeypatch.context() as m:
        m.setattr(imagehead, "_gif", lambda f: None)  # as before: ffmpeg's banner, no walk
        assert run_cli("add", "anim.gif", cwd=root).code == 0
    estimate = {"width": 64, "height": 48, "duration": 2.0, "fps": 25.0, "frames": 50, "codec": "gif"}
    assert run_cli("show", "anim.gif", "--json", cwd=root).json["versions"][0]["media"] == estimate
    r = run_cli("fsck", cwd=root)
    assert r.code == 0, r.out + r.err
    assert run_cli("status", "--porcelain", cwd=root).out == ""
    assert run_cli("add", "anim.gif", "--json", cwd=root).json[0]["status"] == "unchanged"
    assert run_cli("show", "anim.gif", "--json", cwd=root).json["versions"][0]["media"] == estimate
    assert export(tmp_repo, "anim.gif", "-o", str(tmp_path / "anim.mp4")).code == 0
    assert decoded_frames(tmp_path / "anim.mp4") == 48


def test_an_svg_records_its_size_and_is_no_picture_for_ffmpeg(tmp_repo):
    """An SVG recorded no size; now its root element's width and height (or
    viewBox) are read. ffmpeg reads no SVG (nor Lottie), so a derivation of
    one is refused at `gen`, before any job (the Lottie, which has a size,
    failed in ffmpeg: exit 8)."""
    root = tmp_repo.gen({
        "logo.svg": '<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="120" height="80px"><rect/></svg>',
        "box.svg": '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 300 150"/>',
        "bad.svg": '<svg width="120" height="80"',
        "anim.json": json.dumps({"v": "5.7.0", "w": 64, "h": 32, "fr": 30, "ip": 0, "op": 30, "layers": []}),
    }).root
    assert run_cli("add", "logo.svg", "box.svg", "bad.svg", "anim.json", cwd=root).code == 0
    media = {name: run_cli("show", name, "--json", cwd=root).json["versions"][0].get("media", {})
             for name in ("logo.svg", "box.svg", "bad.svg")}
    assert media == {"logo.svg": {"width": 120, "height": 80}, "box.svg": {"width": 300, "height": 150}, "bad.svg": {}}
    for name in ("logo.svg", "anim.json"):
        r = run_cli("gen", "t.png", "--model", "ffmpeg.thumbnail", "-i", name, cwd=root)
        assert r.code == 4 and f"input 0 ({name}) has no picture ffmpeg can read" in r.err, r.err
    r = run_cli("gen", "t.mp4", "--model", "ffmpeg.transcode", "-i", "logo.svg", cwd=root)
    assert r.code == 4 and "logo.svg has no picture to make a .mp4 from" in r.err, r.err
    assert run_cli("queue", "ls", "--json", cwd=root).json == []
    r = run_cli("export", "logo.svg", "-o", "logo.json", cwd=root)
    assert r.code == 4 and "logo.svg is not a Lottie animation" in r.err, r.err


def test_a_png_cut_short_is_not_taken_at_its_header_word(tmp_repo, tmp_path):
    """A PNG cut before its end has a whole header: recorded as 32x24, a
    video export looped it in ffmpeg until the job's one-hour timeout, three
    times. Now the probe walks its chunks, finds no IEND, and export refuses."""
    root = tmp_repo.root
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=32x24", "-frames:v", "1", str(tmp_path / "whole.png"))
    data = (tmp_path / "whole.png").read_bytes()
    (root / "cut.png").write_bytes(data[: len(data) // 2])
    assert probe(root / "cut.png").width is None
    r = run_cli("add", "cut.png", cwd=root)
    assert r.code == 0 and "cut.png: no image ffmpeg can read" in r.err
    r = export(tmp_repo, "cut.png", "-o", str(tmp_path / "cut.mp4"))
    assert r.code == 4 and "cut.png has no picture ffmpeg can read" in r.err, r.err
    assert run_cli("queue", "ls", "--json", cwd=root).json == []


def test_a_variable_frame_rate_clip_exports_every_frame(tmp_repo, tmp_path):
    """5 frames at 10 fps then 15 at 30 fps: ffmpeg encoded at the 1/10 s
    time base the first frames declare and dropped 10 of the 15 fast ones."""
    root = tmp_repo.root
    vfr_clip(root / "vfr.mp4")
    assert run_cli("add", "vfr.mp4", cwd=root).code == 0
    for fmt in ("mp4", "webm"):
        r = export(tmp_repo, "vfr.mp4", "-o", str(tmp_path / f"out.{fmt}"))
        assert r.code == 0, r.err
        assert decoded_frames(tmp_path / f"out.{fmt}") == 20, fmt
    assert export(tmp_repo, "vfr.mp4", "--format", "frames", "-o", str(tmp_path / "frames")).code == 0
    assert len(list((tmp_path / "frames").glob("*.png"))) == 20


def test_a_one_pixel_image_exports_as_video(tmp_repo, tmp_path):
    """4:2:0 needs even sides: 1x1 was cut to 0x0 and the job failed (exit 8)."""
    ffmpeg("-f", "lavfi", "-i", "color=red:size=1x1", "-frames:v", "1", str(tmp_repo.root / "dot.png"))
    assert run_cli("add", "dot.png", cwd=tmp_repo.root).code == 0
    for fmt in ("mp4", "webm"):
        r = export(tmp_repo, "dot.png", "-o", str(tmp_path / f"dot.{fmt}"))
        assert r.code == 0, r.err
        info = probe(tmp_path / f"dot.{fmt}")
        assert (info.width, info.height) == (2, 2)


def test_a_picture_larger_than_ffmpeg_decodes_is_refused_before_any_job(tmp_repo, tmp_path):
    """A 60000x60000 PNG header (69 bytes): add records it without decoding
    anything; export says so up front (exit 4), not as a failed job."""
    import struct
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")
    root = tmp_repo.gen({"huge.png": png}).root
    assert run_cli("add", "huge.png", cwd=root).code == 0
    assert tmp_repo.record("huge.png").current.media["width"] == 60000
    r = export(tmp_repo, "huge.png", "-o", str(tmp_path / "huge.mp4"))
    assert r.code == 4 and "huge.png is 60000x60000, larger than ffmpeg decodes" in r.err, r.err
    assert r.err.splitlines()[1].startswith("hint: ")
    assert run_cli("queue", "ls", "--json", cwd=root).json == []


def test_only_a_sound_lottie_exports_as_lottie(tmp_repo, tmp_path):
    """An SVG, a pose JSON, a Lottie whose op is not after its ip: each was
    copied out as a .json or .lottie no player opens, exit 0. A dotLottie
    without its manifest.json is repacked whole."""
    import io
    import zipfile

    from lattice import lottie

    doc = lottie.image_animation(b"\x89PNGx", 10, 10, 24, 48)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("animations/a.json", lottie.dumps(doc))
    root = tmp_repo.gen({
        "logo.svg": '<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"/>',
        "pose.json": '{"keypoints": [1, 2, 3]}',
        "empty.json": lottie.dumps(dict(doc, op=0)),
        "bare.lottie": buf.getvalue(),
    }).root
    assert run_cli("add", ".", cwd=root).code == 0
    outside = tmp_path / "out"
    outside.mkdir()
    for name, why in (("logo.svg", "is not a Lottie animation"), ("pose.json", "is not a Lottie animation"),
                      ("empty.json", "has no frames")):
        for fmt, ext in (("lottie", "json"), ("dotlottie", "lottie")):
            r = export(tmp_repo, name, "--format", fmt, "-o", str(outside / f"x.{ext}"))
            assert r.code == 4 and f"{name} {why}" in r.err, (name, fmt, r.err)
            assert r.err.splitlines()[1].startswith("hint: ")
    assert not list(outside.iterdir())
    out = outside / "bare.lottie"
    assert export(tmp_repo, "bare.lottie", "-o", str(out)).code == 0
    assert lottie.check_file(out.read_bytes()) == []


def test_an_asset_that_is_not_media_is_refused_in_words_before_any_job(tmp_repo, tmp_path):
    """A text file (kind other) exported as anything: before, the export
    generator's own parameter check leaked out ("parameter 'source_kind'
    must be one of video, image, audio, vector; got 'other'"), or, with no
    -o, a hint to export it as mp4. Now one line says what it is, and the
    hint's command gives its bytes."""
    tmp_repo.gen({"notes.txt": "hello\n"})
    assert run_cli("add", "notes.txt", cwd=tmp_repo.root).code == 0
    for args in (["-o", str(tmp_path / "n.png")], ["--format", "mp4"], []):
        r = run_cli("export", "notes.txt", *args, cwd=tmp_repo.root)
        assert r.code == 4, (args, r.err)
        assert r.err.splitlines()[0] == "error: notes.txt is not media lattice can export (its kind is other)", r.err
        assert "`lattice cat notes.txt > FILE`" in r.err and "source_kind" not in r.err
    assert not (tmp_path / "n.png").exists() and run_cli("queue", "ls", "--json", cwd=tmp_repo.root).json == []
    r = run_cli("cat", "notes.txt", cwd=tmp_repo.root)
    assert r.code == 0 and r.out == "hello\n"


def test_the_hints_for_an_output_inside_the_project_lead_somewhere(tmp_repo):
    """An untracked file in the way: the hint said to track it with `lattice
    add`, after which the export refused it as a tracked asset. A name
    whose extension does not fit: no hint was given; it names one."""
    r = run_cli("gen", "still.png", "--model", "ffmpeg.testsrc", "--set", "width=32", "--set", "height=24", cwd=tmp_repo.root)
    assert r.code == 0, r.err
    tmp_repo.gen({"out/mine.png": "mine"})
    r = run_cli("export", "still.png", "-o", "out/mine.png", cwd=tmp_repo.root)
    assert r.code == 4 and "out/mine.png already exists and is not tracked" in r.err, r.err
    assert "hint: move it aside or name another output" in r.err and "lattice add" not in r.err
    assert (tmp_repo.root / "out/mine.png").read_text() == "mine"
    r = run_cli("export", "still.png", "-o", "out/s.jpeg", cwd=tmp_repo.root)
    assert r.code == 4 and "hint: name it .jpg, e.g. -o out/s.jpg" in r.err, r.err
    assert run_cli("export", "still.png", "-o", "out/s.jpg", cwd=tmp_repo.root).code == 0
    # Edits to an earlier export in the way: recording them (as the hint
    # offers) makes the asset's current version an edit, which no export
    # replaces; the hint says so rather than lead on to that refusal.
    with open(tmp_repo.root / "out/s.jpg", "ab") as f:
        f.write(b"edit")
    r = run_cli("export", "still.png", "-o", "out/s.jpg", cwd=tmp_repo.root)
    assert r.code == 12 and "and name another output (an export never replaces an edit)" in r.err, r.err
    assert run_cli("add", "out/s.jpg", cwd=tmp_repo.root).code == 0
    assert run_cli("export", "still.png", "-o", "out/s.jpg", cwd=tmp_repo.root).code == 4
    assert run_cli("export", "still.png", "-o", "out/s2.jpg", cwd=tmp_repo.root).code == 0


@pytest.mark.parametrize("fmt", ["mp4", "webm", "gif", "png", "frames"])
def test_a_range_that_holds_no_frame_of_the_clip_is_refused_not_delivered_empty(media, tmp_path, fmt):
    """clip.mp4 runs 2 s at 25 fps: its last frame starts at 1.96 s, so
    1.99-2 holds none. mp4, webm and frames were written with no picture
    (exit 0, "exported ... 813 B"); png and gif failed as a generator
    ("ffmpeg wrote no PNG", "Error writing trailer"). Each is refused now,
    as bad input (exit 4), and nothing is left at OUT."""
    out = tmp_path / ("fr" if fmt == "frames" else f"c.{fmt}")
    r = export(media, "clip.mp4", "--format", fmt, "--range", "1.99-2", "-o", str(out))
    assert r.code == 4 and "the range 1.99-2 s holds no frame of the clip: nothing to export" in r.err, r.err
    # The job's own hint, not only where to read the job (which it lost).
    job = run_cli("queue", "ls", "--json", cwd=media.root).json[0]["id"]
    assert r.err.splitlines()[-1] == ("hint: export a --range that starts earlier or lasts longer; "
                                      f"`lattice queue show {job}` has the details"), r.err
    assert list(tmp_path.iterdir()) == []
    # The last frame itself is there to export.
    r = export(media, "clip.mp4", "--format", fmt, "--range", "1.95-2", "-o", str(out))
    assert r.code == 0, r.err
    assert decoded_frames(next(out.iterdir()) if fmt == "frames" else out) == 1


def test_an_empty_output_name_is_refused_not_taken_for_the_default(tmp_repo):
    """`lattice export a.png -o "$OUT" --format png` with OUT unset: the
    export went to the default name, a-export.png in the project, and was
    recorded there as a new asset."""
    r = run_cli("gen", "still.png", "--model", "ffmpeg.testsrc", "--set", "width=32", "--set", "height=24", cwd=tmp_repo.root)
    assert r.code == 0, r.err
    for out, fmt, default in (("", "png", "still-export.png"), (" ", "frames", "still-frames")):
        r = run_cli("export", "still.png", "-o", out, "--format", fmt, cwd=tmp_repo.root)
        assert r.code == 4 and r.err.splitlines() == [
            f"error: -o {out!r}: the output name is empty",
            f"hint: name the output, or leave -o out for {default} here"], r.err
    assert sorted(p.name for p in tmp_repo.root.iterdir()) == [".lattice", "still.png"]
    assert tmp_repo.index.names() == ["still.png"]


def test_what_a_killed_frames_export_left_goes_with_the_next_export_to_it(tmp_repo, tmp_path):
    """A frames export killed outright (kill -9) left its frames so far in
    `.OUT.tmp-<random>`, a folder nothing ever removed: not the next export
    to OUT, not gc. It is named by its pid now, as a file export's temp
    is, and the next frames export to OUT removes it once that process is
    gone and it sat an hour."""
    import signal
    import subprocess
    import sys
    import time

    from lattice.export_target import STALE_TEMP_AGE

    root = tmp_repo.root
    r = run_cli("gen", "long.mp4", "--model", "ffmpeg.testsrc", "--set", "width=320", "--set", "height=240",
                "--set", "duration=60", cwd=root)
    assert r.code == 0, r.err
    out = tmp_path / "fr"
    p = subprocess.Popen([sys.executable, "-m", "lattice", "export", "long.mp4", "--format", "frames", "--quality", "master",
                          "-o", str(out)], cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    temps: list = []
    while time.monotonic() < deadline and p.poll() is None:
        temps = [t for t in tmp_path.glob(".fr.tmp-*") if any(t.iterdir())]
        if temps:
            break
        time.sleep(0.02)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    assert len(temps) == 1 and temps[0].name.startswith(f".fr.tmp-{p.pid}-"), temps
    # ffmpeg, in a process group of its own, dies with lattice a moment later
    # (lattice.childguard): until then it may write a frame more.
    seen, still = -1, time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - still < 1:
        n = len(list(temps[0].iterdir()))
        if n != seen:
            seen, still = n, time.monotonic()
        time.sleep(0.05)
    (tmp_path / ".fr.tmp-mine").mkdir()  # not an export's name: never touched
    old = time.time() - STALE_TEMP_AGE - 60
    os.utime(temps[0], (old, old))
    r = run_cli("export", "long.mp4", "--format", "frames", "--range", "0-0.2", "-o", str(out), cwd=root)
    assert r.code == 0, r.err
    assert sorted(p.name for p in tmp_path.iterdir()) == [".fr.tmp-mine", "fr", "fr.lattice.json", "proj"]
    assert len(list(out.iterdir())) == 5
