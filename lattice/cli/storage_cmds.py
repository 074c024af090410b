"""Storage commands: gc, du, export."""

from __future__ import annotations

import time
from typing import Optional

import typer

from lattice.cli.common import cwd, echo, emit_json, human_size, repo_from_ctx, say

JSON = typer.Option(False, "--json", help="Print machine-readable JSON.")
NO_REGEN = typer.Option(False, "--no-regen", help="Refuse instead of re-making an evicted output; name the command that would.")


def gc(
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="List exactly what would go and the bytes freed; remove nothing."),
    keep_versions: Optional[int] = typer.Option(None, "--keep-versions", min=0, help="Keep the outputs of the newest N versions of every asset (default: the [versions] limit of its kind)."),
    older_than: Optional[str] = typer.Option(None, "--older-than", metavar="AGE", help="Evict outputs unused for AGE (90s, 30m, 24h, 7d), overriding every kind's age (kinds kept forever, like thumbnails, stay)."),
    max_size: Optional[str] = typer.Option(None, "--max-size", metavar="SIZE", help="Then evict least recently used outputs until the store holds at most SIZE (500MB, 10GB)."),
    include_nondeterministic: bool = typer.Option(False, "--include-nondeterministic", help="Also evict outputs of non-deterministic generators (re-making them gives other bytes)."),
    include_current: bool = typer.Option(False, "--include-current", help="Also evict current (unpinned) outputs that can be re-made; pinned ones always stay."),
    json: bool = JSON,
) -> None:
    """Evict outputs that can be re-made, by policy; sweep unreferenced objects.

    Never evicted: imported content, outputs of non-deterministic generators,
    and the current and pinned version of every asset on every branch and tag
    (unless asked). Policies per kind come from `[gc.policy.<kind>]` in
    .lattice/config.toml: thumbnails forever, images after 7 days unused,
    videos after 3 days, intermediates (pose, depth, mask) after 24 hours.
    Unreferenced objects go after `[gc] grace` (two weeks). Beside the
    files `lattice export` wrote outside the project, temps a killed export
    left go once its process is gone and they sat an hour, and the records
    of such files gone or changed since are forgotten. History is packed into one git pack once it holds
    1,000 loose objects or 20 packs.
    Runs as a queue job under the repository lock; every run is logged for
    `lattice du`.
    """
    from lattice.gc import GcOptions, file_size, parse_age, parse_size, plan_gc, run_gc

    repo = repo_from_ctx(reading=dry_run)
    options = GcOptions(
        keep_versions=keep_versions,
        older_than=parse_age(older_than, "--older-than") if older_than is not None else None,
        max_size=parse_size(max_size, "--max-size") if max_size is not None else None,
        include_nondeterministic=include_nondeterministic,
        include_current=include_current,
    )
    packed = forgotten = 0
    if dry_run:
        plan = plan_gc(repo, options)
        removed, freed = len(plan.evictions), plan.bytes
    else:
        result = run_gc(repo, options)
        plan, removed, freed, packed = result.plan, result.removed, result.freed, result.history_packed
        forgotten = result.exports_forgotten
    if json:
        emit_json({"dry_run": dry_run, "objects": removed, "bytes": freed, "evictions": plan.evictions,
                   "temps": plan.temps, "temp_bytes": plan.temp_bytes, "present_objects": plan.objects,
                   "present_bytes": plan.present_bytes, "history_packed": packed,
                   "exports_forgotten": len(plan.stale_exports) if dry_run else forgotten})
        return
    out = echo if dry_run else say  # a dry run's plan is the data asked for
    for e in plan.evictions:
        what = ", ".join(e.assets[:3]) + (f" (+{len(e.assets) - 3})" if len(e.assets) > 3 else "") or "unreferenced"
        out(f"{'would evict' if dry_run else 'evicted'}  {e.object[:12]}  {human_size(e.bytes):>10}  {e.reason:<12}  {what}")
    if dry_run:
        for t in plan.temps:
            out(f"would remove  {'temp file':<12}  {human_size(file_size(t)):>10}  {t}")
    verb = "would free" if dry_run else "freed"
    out(f"{removed} objects, {verb} {human_size(freed)} of {human_size(plan.present_bytes)}")
    if plan.temps:
        out(f"{len(plan.temps)} stray temp file(s) left by interrupted commands, {human_size(plan.temp_bytes)}: {'would remove' if dry_run else 'removed'}")
    if plan.stale_exports:
        out(f"{len(plan.stale_exports)} record(s) of exported files gone or changed since: {'would forget' if dry_run else 'forgotten'}")
    if packed:
        say(f"history: packed {packed} objects into one pack")


def du(
    by: Optional[str] = typer.Option(None, "--by", help="Break down by kind, branch or generator."),
    json: bool = JSON,
) -> None:
    """Show bytes present and evicted, regenerable versus permanent, what gc
    would free now, the size of the recipes against the media they describe,
    and the bytes saved by past gc runs."""
    from lattice.du import disk_usage

    report = disk_usage(repo_from_ctx(reading=True), by)
    if json:
        emit_json(report)
        return
    t = report.total
    echo(f"present      {human_size(t.present):>10}  ({human_size(t.regenerable)} regenerable, {human_size(t.permanent)} permanent)")
    echo(f"evicted      {human_size(t.evicted):>10}  (re-made on demand)")
    if t.lost:
        echo(f"lost         {human_size(t.lost):>10}  (cannot be re-made: `lattice fsck`)")
    if report.unreferenced:
        echo(f"unreferenced {human_size(report.unreferenced):>10}")
    echo(f"gc would free {human_size(report.gc_would_free)} now ({report.gc_would_remove} objects)")
    echo(f"recipes      {human_size(report.recipes_bytes + report.history_bytes):>10}  describe {human_size(report.outputs_bytes)} of media (digital DNA ratio {report.dna_ratio:g}:1)")
    echo(f"gc saved     {human_size(report.gc_saved):>10}  in {report.gc_runs} runs")
    if report.groups:
        echo(f"\n{report.by:<24} {'present':>10} {'evicted':>10} {'regen.':>10} {'perm.':>10} {'assets':>7}")
        for key, u in report.groups.items():
            echo(f"{key:<24} {human_size(u.present):>10} {human_size(u.evicted):>10} {human_size(u.regenerable):>10} {human_size(u.permanent):>10} {u.assets:>7}")


EXPORT_HELP = """Write a deliverable of an asset's effective (pinned or current) version,
through the queue. An output inside the project is recorded as an asset
(generator lattice.export) that `lattice render` can re-make; a frames
directory is not: its PNGs stay untracked files, and it replaces only an
earlier frames export of the same asset, never tracked or other files.

\b
Quality presets (default production):
  mp4   x264 CRF/preset  draft 32/ultrafast  preview 26/veryfast  production 20/medium  master 16/slow; AAC 96k-256k
  webm  VP9 CRF          draft 40            preview 36           production 31         master 24; Opus 64k-192k
  gif   palette colours  draft 64 no dither  preview 128 bayer    production 256 sierra master 256 floyd-steinberg
  png/jpg/webp  PNG level 1/3/6/9, JPEG q 8/5/3/2, WebP quality 60/75/88/lossless (first frame of --range)
  wav/mp3       PCM 16-bit (24-bit master); MP3 96k/128k/192k/320k
  frames        numbered PNGs in a directory (of a still, one, unless --range or --fps asks for a clip)
  lottie/dotlottie  Lottie assets as is, images embedded

Outside the project, the recipe is embedded in PNG, MP4, WebM, MP3 and
Lottie made from images, otherwise written to OUT.lattice.json; inside it,
the export is an asset and its manifest record holds the recipe (frames
get the OUT.lattice.json sidecar wherever they are). An existing file
outside the project is replaced only when an earlier export from this
project wrote it and it is unchanged since, and a sidecar only when it is
one an earlier export of the same asset wrote; --force replaces any other
regular file there, sidecar included (frames keep their rule).
"""


def export(
    path: str = typer.Argument(..., help="Asset to export."),
    format: Optional[str] = typer.Option(None, "--format", "-f", help="mp4, webm, gif, png, jpg, webp, frames, wav, mp3, lottie or dotlottie (default: from the --output extension)."),
    quality: str = typer.Option("production", "--quality", help="draft, preview, production or master."),
    size: Optional[str] = typer.Option(None, "--size", metavar="WxH", help="Output size, e.g. 1280x720."),
    fps: Optional[float] = typer.Option(None, "--fps", help="Output frame rate."),
    range_: Optional[str] = typer.Option(None, "--range", metavar="START-END", help="Seconds or [HH:]MM:SS, e.g. 1.5-4."),
    out: Optional[str] = typer.Option(None, "--output", "-o", metavar="OUT", help="Output file (a directory for frames); default NAME-export.EXT here."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output file outside the project, and its OUT.lattice.json sidecar, that lattice did not write."),
    no_regen: bool = NO_REGEN,
    json: bool = JSON,
) -> None:
    from lattice.export import ExportOptions, export as do_export
    from lattice.paths import name_for

    repo = repo_from_ctx()
    name = name_for(repo.root, path, cwd(), stored=True)
    start = time.monotonic()
    result = do_export(
        repo, name, ExportOptions(format, quality, size, fps, range_), out, cwd(), regen=not no_regen, force=force,
        notify=lambda msg: echo(msg, err=True),
    )
    if json:
        emit_json(result)
        return
    recorded = f" (recorded as {result.asset} v{result.asset_version})" if result.asset else ""
    say(f"exported {result.source}@v{result.version} as {result.format} ({result.quality}) to {result.output}"
         f" {human_size(result.bytes)} in {time.monotonic() - start:.1f}s{recorded}")
    if result.sidecar:
        say(f"recipe written to {result.sidecar}")


export.__doc__ = EXPORT_HELP

def register(app: typer.Typer) -> None:
    app.command()(gc)
    app.command()(du)
    app.command()(export)
