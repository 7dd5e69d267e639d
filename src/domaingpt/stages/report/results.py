"""The report stage's run: report.html, report.md and report/conclusions.csv."""

from __future__ import annotations

from pathlib import Path

from domaingpt.context.stage import StageContext
from domaingpt.core.claims import claims_frame, display
from domaingpt.core.io import atomic_write_bytes, atomic_write_text, read_json
from domaingpt.report.html import FigureFiles, render_html
from domaingpt.report.markdown import render_markdown
from domaingpt.stages.report.compute import build_report, corpus_names
from domaingpt.stages.report.settings import ReportSettings

#: Where ``report.embed = false`` writes the figures, beside ``report.html``.
FILES_DIR = "report_files"


def run(ctx: StageContext, settings: ReportSettings) -> dict[str, Path]:
    """Write ``report.html``, ``report.md`` and ``report/`` (conclusions, figures); with
    ``settings.embed`` false, the figures of report.html go to :data:`FILES_DIR` beside
    it."""
    run, log = ctx.run, ctx.log
    root = run.root
    figdir = ctx.out
    sections, claims = build_report(run, ctx.stages, figdir)
    spec = read_json(root / "study.json") if (root / "study.json").is_file() else {}
    title = f"Domain-specific GPT study: {spec.get('name', root.name)}"
    subtitle = f"Run directory {root.resolve()}; corpora: " + ", ".join(
        display(c) for c in corpus_names(run)
    )
    paths = {"conclusions": ctx.write_table("conclusions", claims_frame(claims))}
    for p in sorted(figdir.glob("*.png")):
        paths[p.stem] = p
    files = None if settings.embed else FigureFiles(root / FILES_DIR)
    page = render_html(title, subtitle, sections, files)
    wanted = _write_files(files, paths)  # the figures first, then the page that links them
    paths["html"] = atomic_write_text(root / "report.html", page)
    _drop_stale_files(root / FILES_DIR, wanted)
    paths["md"] = atomic_write_text(
        root / "report.md", render_markdown(title, subtitle, sections, root)
    )
    missing = sum(b.kind == "missing" for s in sections for b in s.blocks)
    log(f"report: {paths['html']} ({missing} missing part{'s' if missing != 1 else ''})")
    return paths


def _write_files(files: FigureFiles | None, paths: dict[str, Path]) -> set[Path]:
    """Copy the figures report.html links (none when they are embedded)."""
    if files is None:
        return set()
    for source, target in files.copies.items():
        paths[f"{FILES_DIR}/{target.name}"] = atomic_write_bytes(target, source.read_bytes())
    return set(files.copies.values())


def _drop_stale_files(folder: Path, wanted: set[Path]) -> None:
    """Remove what an earlier report wrote in :data:`FILES_DIR` and this one does not
    link (the folder is the report's own; the whole of it when the figures are embedded)."""
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if path not in wanted and path.is_file() and not path.is_symlink():
            path.unlink()
    if not any(folder.iterdir()):
        folder.rmdir()
