"""The report of a study: ``report.html`` (one self-contained file) and ``report.md``.

Both are rendered from the same document — sections of paragraphs, tables, figures and
sample texts — built from the tables the stages wrote (read through :class:`Study`, so
nothing is re-run). Sections follow the study: corpora, training, cross-domain, softmax
inspection, interpretability, sample quality, conclusions. A stage that is missing,
failed or not available in this version leaves its section with a note saying so.

Every sentence that states a finding is generated from measured numbers, and every
conclusion is one of the study's claims checked against this run (see
:func:`conclusions`): "holds", "does not hold", "partly", or "not measured" when the run
has no data for it.

HTML: figures are embedded as base64 PNG, there is no script and no external resource
(it reads offline), and every text that comes from data (corpora, prompts, samples,
file names) is HTML-escaped. Markdown: the same tables, figures referenced by relative
path, samples in fenced code blocks.
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd

from . import __version__
from .errors import DomainGPTError
from .io import atomic_write_text

Log = Callable[[str], None]

# The study's published zero-shot matrix (rows: model, columns: corpus), nats/char.
PUBLISHED_ZERO_SHOT: dict[str, dict[str, float]] = {
    "shakespeare": {"shakespeare": 1.3966, "math": 3.9497, "wikipedia": 2.3861},
    "math": {"shakespeare": 3.2619, "math": 1.2258, "wikipedia": 2.5259},
    "wikipedia": {"shakespeare": 2.5144, "math": 2.7195, "wikipedia": 1.3786},
}
PUBLISHED_UNIQUE_CHARS = {"shakespeare": 65, "math": 110, "wikipedia": 292}
NANOGPT_CPU_VAL_LOSS = 1.8857  # nanoGPT's README, shakespeare_char on a CPU
MAX_TABLE_ROWS = 40

HOLDS, FAILS, PARTLY, UNMEASURED = "holds", "does not hold", "partly", "not measured"


# --- the document --------------------------------------------------------------------


@dataclass
class Block:
    kind: str  # p | table | figure | sample | missing | note | h3 | verdicts
    text: str = ""
    table: pd.DataFrame | None = None
    path: Path | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    source: str = ""  # the file a table came from (shown when it is truncated)
    max_rows: int = 0  # 0: MAX_TABLE_ROWS; -1: every row


@dataclass
class Section:
    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)

    def p(self, text: str) -> None:
        self.blocks.append(Block("p", text))

    def note(self, text: str) -> None:
        self.blocks.append(Block("note", text))

    def h3(self, text: str) -> None:
        self.blocks.append(Block("h3", text))

    def table(
        self, df: pd.DataFrame, caption: str = "", source: str = "", *, max_rows: int = 0
    ) -> None:
        self.blocks.append(Block("table", caption, table=df, source=source, max_rows=max_rows))

    def figure(self, path: Path, caption: str) -> None:
        if Path(path).is_file():
            self.blocks.append(Block("figure", caption, path=Path(path)))

    def missing(self, text: str) -> None:
        self.blocks.append(Block("missing", text))


def display(name: str) -> str:
    """``shakespeare`` -> ``Shakespeare`` (corpus and model names in prose)."""
    name = str(name)
    return name[:1].upper() + name[1:]


_COUNT_SUFFIXES = (
    "iteration",
    "iterations",
    "iter",
    "step",
    "steps",
    "seed",
    "seeds",
    "count",
    "characters",
    "chars",
    "lines",
    "bytes",
    "unique",
    "rank",
    "order",
    "codepoint",
    "windows",
    "prompts",
)


def _countlike(col: str) -> bool:
    """Columns whose float values are counts (NaN made them float): shown as integers."""
    col = col.lower()
    return col in ("n", "k", "seeds") or col.startswith("n_") or col.endswith(_COUNT_SUFFIXES)


def _fmt(v: Any, col: str = "") -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int) and not isinstance(v, bool):
        plain = any(k in col for k in ("iter", "step", "seed", "codepoint", "order", "rank"))
        return str(v) if plain or abs(v) < 1000 else f"{v:,}"
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        if col.endswith("seconds"):
            return f"{v:.1f}"
        if col.endswith("share") or col.endswith("fraction"):
            return f"{100 * v:.2f} %" if v >= 1e-4 or v == 0 else f"{100 * v:.2g} %"
        if float(v).is_integer() and abs(v) < 1e15 and _countlike(col):
            return _fmt(int(v), col)
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 1e-3 or v == 0:
            return f"{v:.4f}"
        return f"{v:.3g}"
    return str(v)


def _cells(df: pd.DataFrame) -> list[list[str]]:
    out = []
    for row in df.itertuples(index=False):
        out.append(
            [
                _fmt(v.item() if hasattr(v, "item") else v, str(c))
                for c, v in zip(df.columns, row, strict=True)
            ]
        )
    return out


# --- HTML ----------------------------------------------------------------------------

_CSS = """
:root { --fg:#1d2329; --muted:#5b6670; --line:#d9dee3; --bg:#ffffff; --soft:#f5f7f9;
        --ok:#1a7f37; --bad:#b42318; --part:#9a6700; --na:#6e7781; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
       color:var(--fg); background:var(--bg); }
main { max-width:1120px; margin:0 auto; padding:24px 28px 80px; }
h1 { font-size:28px; margin:8px 0 4px; }
h2 { font-size:22px; margin:40px 0 10px; padding-top:12px; border-top:2px solid var(--line); }
h3 { font-size:17px; margin:26px 0 8px; }
p { margin:8px 0; max-width:78ch; }
.sub { color:var(--muted); margin:0 0 16px; }
nav { background:var(--soft); border:1px solid var(--line); border-radius:8px; padding:10px 16px; }
nav ol { margin:4px 0; padding-left:22px; columns:2; }
nav a { color:#0b5cad; text-decoration:none; }
.tablewrap { overflow-x:auto; margin:10px 0 4px; }
table { border-collapse:collapse; font-size:13.5px; }
p.cap { color:var(--muted); font-size:13px; margin:14px 0 2px; }
th, td { border:1px solid var(--line); padding:4px 8px; vertical-align:top; text-align:left; }
td { max-width:56ch; } td:not(.num) { overflow-wrap:break-word; }
th { background:var(--soft); font-weight:600; }
td.num { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
tr:nth-child(even) td { background:#fbfcfd; }
figure { margin:14px 0 18px; }
figure img { max-width:100%; height:auto; border:1px solid var(--line); border-radius:4px; }
figcaption { color:var(--muted); font-size:13px; margin-top:4px; }
pre.sample { white-space:pre-wrap; word-break:break-word; background:var(--soft); margin:0;
             padding:6px 8px; border-radius:4px; font:12.5px/1.4 ui-monospace,"DejaVu Sans Mono",monospace; }
.note { color:var(--muted); font-size:13.5px; }
.missing { border-left:4px solid var(--part); background:#fff8e6; padding:8px 12px; margin:10px 0; }
.verdict { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12.5px;
           font-weight:600; color:#fff; white-space:nowrap; }
.v-holds { background:var(--ok); } .v-fails { background:var(--bad); }
.v-partly { background:var(--part); } .v-na { background:var(--na); }
details { margin:8px 0; } summary { cursor:pointer; font-weight:600; }
footer { margin-top:48px; color:var(--muted); font-size:13px; }
"""

_VERDICT_CLASS = {HOLDS: "v-holds", FAILS: "v-fails", PARTLY: "v-partly", UNMEASURED: "v-na"}


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _is_numeric(col: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)


def _rows_shown(df: pd.DataFrame, max_rows: int) -> pd.DataFrame:
    if max_rows < 0:
        return df
    return df.head(max_rows or MAX_TABLE_ROWS)


def _html_table(df: pd.DataFrame, caption: str, source: str, max_rows: int = 0) -> str:
    shown = _rows_shown(df, max_rows)
    numeric = [_is_numeric(shown[c]) for c in shown.columns]
    parts = [f'<p class="cap">{_e(caption)}</p>'] if caption else []
    parts.append('<div class="tablewrap"><table>')
    parts.append(
        "<thead><tr>" + "".join(f"<th>{_e(c)}</th>" for c in shown.columns) + "</tr></thead><tbody>"
    )
    for cells in _cells(shown):
        tds = []
        for cell, num, col in zip(cells, numeric, shown.columns, strict=True):
            if col == "verdict" and cell in _VERDICT_CLASS:
                tds.append(
                    f'<td><span class="verdict {_VERDICT_CLASS[cell]}">{_e(cell)}</span></td>'
                )
            elif num:
                tds.append(f'<td class="num">{_e(cell)}</td>')
            else:
                tds.append(f"<td>{_e(cell)}</td>")
        parts.append("<tr>" + "".join(tds) + "</tr>")
    parts.append("</tbody></table></div>")
    if len(df) > len(shown):
        where = f" in {source}" if source else ""
        parts.append(f'<p class="note">First {len(shown)} of {len(df):,} rows; all{_e(where)}.</p>')
    return "".join(parts)


def _html_samples(block: Block) -> str:
    rows = [
        '<tr><td class="num">{}</td><td class="num">{}</td><td><pre class="sample">{}</pre></td></tr>'.format(
            _e(_fmt(r.get("iter"))), _e(_fmt(r.get("val_loss"), "val_loss")), _e(r.get("text", ""))
        )
        for r in block.rows
    ]
    return (
        f'<details open><summary>{_e(block.text)}</summary><div class="tablewrap"><table>'
        "<thead><tr><th>iteration</th><th>val loss</th><th>sample</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></div></details>"
    )


def _html_figure(block: Block) -> str:
    assert block.path is not None
    data = base64.b64encode(block.path.read_bytes()).decode("ascii")
    mime = "image/svg+xml" if block.path.suffix.lower() == ".svg" else "image/png"
    return (
        f'<figure><img src="data:{mime};base64,{data}" alt="{_e(block.text)}">'
        f"<figcaption>{_e(block.text)}</figcaption></figure>"
    )


def render_html(title: str, subtitle: str, sections: list[Section]) -> str:
    """The report as one HTML document: no script, no external resource."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>",
        f'<h1>{_e(title)}</h1><p class="sub">{_e(subtitle)}</p>',
        "<nav><strong>Contents</strong><ol>",
        *(f'<li><a href="#{_e(s.id)}">{_e(s.title)}</a></li>' for s in sections),
        "</ol></nav>",
    ]
    for s in sections:
        out.append(f'<section id="{_e(s.id)}"><h2>{_e(s.title)}</h2>')
        for b in s.blocks:
            if b.kind == "p":
                out.append(f"<p>{_e(b.text)}</p>")
            elif b.kind == "note":
                out.append(f'<p class="note">{_e(b.text)}</p>')
            elif b.kind == "h3":
                out.append(f"<h3>{_e(b.text)}</h3>")
            elif b.kind == "missing":
                out.append(f'<div class="missing"><strong>Missing:</strong> {_e(b.text)}</div>')
            elif b.kind == "table" and b.table is not None:
                out.append(_html_table(b.table, b.text, b.source, b.max_rows))
            elif b.kind == "figure":
                out.append(_html_figure(b))
            elif b.kind == "sample":
                out.append(_html_samples(b))
            elif b.kind == "iframe" and b.path is not None:
                # Embedded whole, sandboxed (no script can run): the page stays one file.
                doc = b.path.read_text(encoding="utf-8")
                out.append(
                    f'<figure><iframe sandbox="" title="{_e(b.text)}" srcdoc="{_e(doc)}" '
                    'style="width:100%;height:560px;border:1px solid #d9dee3;border-radius:4px">'
                    f"</iframe><figcaption>{_e(b.text)}</figcaption></figure>"
                )
        out.append("</section>")
    out.append(
        f"<footer>Generated by domaingpt {_e(__version__)} on "
        f"{_e(datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC'))}.</footer>"
    )
    out.append("</main></body></html>")
    return "\n".join(out) + "\n"


# --- Markdown ------------------------------------------------------------------------

_MD_TEXT = re.compile(r"([\\`*_{}\[\]<>|#~$])")


def _md(text: Any) -> str:
    """Text safe in a Markdown paragraph or table cell (no HTML, no table breaks)."""
    s = str(text).replace("&", "&amp;")
    s = _MD_TEXT.sub(r"\\\1", s)
    return s.replace("\r", " ").replace("\n", " ⏎ ")


def _md_table(df: pd.DataFrame, caption: str, source: str, max_rows: int = 0) -> str:
    shown = _rows_shown(df, max_rows)
    numeric = [_is_numeric(shown[c]) for c in shown.columns]
    lines = []
    if caption:
        lines += [f"*{_md(caption)}*", ""]
    lines.append("| " + " | ".join(_md(c) for c in shown.columns) + " |")
    lines.append("|" + "".join(" ---: |" if n else " --- |" for n in numeric))
    for cells in _cells(shown):
        lines.append("| " + " | ".join(_md(c) for c in cells) + " |")
    if len(df) > len(shown):
        where = f" in `{source}`" if source else ""
        lines += ["", f"First {len(shown)} of {len(df):,} rows; all{where}."]
    return "\n".join(lines)


def _fence(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def render_markdown(title: str, subtitle: str, sections: list[Section], root: Path) -> str:
    """The same document for GitHub: figures referenced relative to ``root``."""
    out = [f"# {_md(title)}", "", _md(subtitle), "", "## Contents", ""]
    out += [f"{i}. [{_md(s.title)}](#{s.id})" for i, s in enumerate(sections, 1)]
    for s in sections:
        out += ["", f'<a id="{s.id}"></a>', "", f"## {_md(s.title)}", ""]
        for b in s.blocks:
            if b.kind in ("p", "note"):
                out += [_md(b.text), ""]
            elif b.kind == "h3":
                out += [f"### {_md(b.text)}", ""]
            elif b.kind == "missing":
                out += [f"> **Missing:** {_md(b.text)}", ""]
            elif b.kind == "table" and b.table is not None:
                out += [_md_table(b.table, b.text, b.source, b.max_rows), ""]
            elif b.kind == "iframe" and b.path is not None:
                rel = b.path.resolve().relative_to(root.resolve()).as_posix()
                out += [f"[{_md(b.text)}]({quote(rel)})", ""]
            elif b.kind == "figure" and b.path is not None:
                try:
                    rel = b.path.resolve().relative_to(root.resolve()).as_posix()
                except ValueError:
                    rel = b.path.name
                out += [f"![{_md(b.text)}]({quote(rel)})", ""]
            elif b.kind == "sample":
                out += [f"**{_md(b.text)}**", ""]
                for r in b.rows:
                    text = str(r.get("text", ""))
                    fence = _fence(text)
                    head = f"iteration {_fmt(r.get('iter'))}, val loss {_fmt(r.get('val_loss'), 'val_loss')}"
                    out += [f"*{_md(head)}*", "", fence + "text", text, fence, ""]
    return "\n".join(out).rstrip() + "\n"


# --- reading results safely ----------------------------------------------------------


def _tables(study: Any, stage: str) -> tuple[dict[str, pd.DataFrame] | None, str]:
    """The stage's tables, or None and why they are missing (never raises)."""
    status = study.status(stage)
    if stage not in ("stats", "train") and status != "done":
        rec = study.records.get(stage, {})
        why = {
            "unavailable": "this stage is not available in this version of domaingpt",
            "failed": f"the stage failed: {rec.get('message', '')}",
            "blocked": f"the stage did not run: {rec.get('message', '')}",
            "absent": "the stage has not run yet",
        }.get(status, f"status {status}")
        return None, f"{stage}: {why}"
    try:
        return study.tables(stage), ""
    except DomainGPTError as e:
        return None, f"{stage}: {e}"
    except Exception as e:  # a broken table must not take the whole report down
        return None, f"{stage}: cannot read its results ({type(e).__name__}: {e})"


def _stage_section(
    study: Any, section_id: str, title: str, stage: str
) -> tuple[Section, dict[str, pd.DataFrame] | None]:
    """A new section and the stage's tables; None (the section says why) when missing."""
    s = Section(section_id, title)
    tables, why = _tables(study, stage)
    if tables is None:
        s.missing(why)
    return s, tables


def _pngs(study: Any, sub: str) -> list[Path]:
    d = study.root / sub
    return sorted(d.rglob("*.png")) if d.is_dir() else []


def _caption(path: Path) -> str:
    stem = path.stem.replace("_", " ").replace("-", " ")
    return stem[:1].upper() + stem[1:]


# --- sections ------------------------------------------------------------------------


def _overview(study: Any) -> Section:
    s = Section("overview", "The study and this run")
    spec = study.spec
    s.p(
        "This report follows the study of how the training domain shapes small "
        "character-level GPT models (nanoGPT architecture): the corpora's character "
        "statistics, one model trained per corpus, the cross-domain evaluation, the "
        "softmax output layer and gradient-based attributions. Every finding below is "
        "computed from this run's files; the conclusions check the study's claims against them."
    )
    if spec.get("description"):
        s.p(spec["description"])
    corpora = ", ".join(display(c) for c in study.corpora())
    s.p(
        f"Corpora: {corpora}. Study preset: {spec.get('base', '?')}; training preset: "
        f"{Path(str(spec.get('preset', '?'))).stem}."
    )
    rows = []
    for name, rec in study.records.items():
        status = rec.get("status", "?")
        rows.append(
            {
                "stage": name,
                "status": status,
                "seconds": rec.get("seconds"),
                "note": rec.get("message", "") if status != "done" else "",
            }
        )
    if rows:
        s.table(pd.DataFrame(rows), "Stages of this run (time of the last run that did work)")
    versions = study.versions
    if versions:
        s.note("Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    return s


def _corpora(study: Any) -> Section:
    s, tables = _stage_section(study, "corpora", "Corpora: character statistics", "stats")
    if tables is None:
        return s
    summary = tables["summary"]
    cols = [
        c
        for c in (
            "corpus",
            "characters",
            "lines",
            "unique_characters",
            "non_ascii_unique",
            "most_frequent",
            "digit_share",
            "math_symbol_share",
            "non_ascii_share",
            "notable_symbols",
        )
        if c in summary.columns
    ]
    view = summary[cols].copy()
    view.insert(
        view.columns.get_loc("unique_characters") + 1,
        "study_unique_characters",
        [PUBLISHED_UNIQUE_CHARS.get(c, float("nan")) for c in summary["corpus"]],
    )
    s.table(
        view,
        "One row per corpus (the study's published unique-character counts beside ours)",
        "stats/summary.csv",
    )
    if "class_shares" in tables:
        cs = tables["class_shares"].pivot_table(
            index="char_class", columns="corpus", values="share", sort=False
        )
        cs = cs[[c for c in summary["corpus"] if c in cs.columns]]
        cs.columns = [f"{c}_share" for c in cs.columns]
        s.table(cs.reset_index(), "Share of each character class", "stats/class_shares.csv")
    if "notable" in tables and not tables["notable"].empty:
        nb = tables["notable"]
        cols = [c for c in ("corpus", "label", "char_class", "count", "context") if c in nb]
        s.table(
            nb[cols],
            "Notable symbols, each with the text around its first occurrence (⏎ newline, ⇥ tab)",
            "stats/notable.csv",
        )
    for c in summary["corpus"]:
        for p in _pngs(study, "stats"):
            if p.stem == f"distribution_{c}":
                s.figure(p, f"{display(c)}: the 40 most frequent characters, and all by rank")
    s.figure(study.root / "stats" / "class_shares.png", "Character classes by corpus")
    return s


def _training(study: Any, figdir: Path) -> Section:
    s = Section("training", "Training: loss curves and samples")
    tables, why = _tables(study, "train")
    if tables is None or tables["summary"].empty:
        s.missing(why or "no trained model in this run")
        return s
    summary = tables["summary"]
    models = _ordered(summary["model"], study.corpora())
    summary = summary.set_index("model").loc[models].reset_index()
    cfg = _model_config(study, models[0])
    if cfg:
        m, t = cfg.get("model", {}), cfg.get("train", {})
        s.p(
            f"Every model has {m.get('n_layer')} layers, {m.get('n_head')} heads, "
            f"{m.get('n_embd')} dimensions and a context of {m.get('block_size')} characters; "
            f"it is trained for {t.get('max_iters')} iterations of {t.get('batch_size')}×"
            f"{t.get('grad_accum', 1)} sequences (learning rate {t.get('lr')} → {t.get('min_lr')})."
        )
    s.table(
        summary,
        "Validation loss (nats per character) at the first and last iteration; the last on the whole validation split",
    )
    metrics = tables["metrics"]
    if not metrics.empty:
        from .figures import plot_loss_curves

        runs = {m: metrics[metrics["model"] == m].to_dict("records") for m in models}
        path = plot_loss_curves(runs, figdir / "loss_curves.png")
        s.figure(path, "Training and validation loss of every model")
    samples = tables["samples"]
    if not samples.empty:
        s.h3("Sample timeline")
        s.p(
            "A fixed-seed sample (temperature 1) at every history checkpoint of each model, "
            "with the validation loss at that iteration."
        )
        for m in models:
            rows = samples[samples["model"] == m].sort_values("iter").to_dict("records")
            if rows:
                s.blocks.append(Block("sample", f"{display(m)} model", rows=rows))
    return s


def _model_config(study: Any, model: str) -> dict[str, Any]:
    p = study.run.model(model) / "run.json"
    try:
        import json

        return json.loads(p.read_text(encoding="utf-8")).get("config", {})
    except (OSError, ValueError):
        return {}


def final_zero_shot(zs: pd.DataFrame) -> pd.DataFrame:
    """The zero-shot rows of each model's last evaluated iteration."""
    if "iteration" not in zs.columns:
        return zs
    last = zs.groupby("model")["iteration"].transform("max")
    return zs[zs["iteration"] == last]


def _ordered(names: Any, order: list[str] | None) -> list[str]:
    """``names`` in the study's corpus order (then the rest as they come)."""
    names = list(dict.fromkeys(names))
    first = [n for n in (order or []) if n in names]
    return first + [n for n in names if n not in first]


def zero_shot_matrix(
    zs: pd.DataFrame, with_ci: bool = True, order: list[str] | None = None
) -> pd.DataFrame:
    """Rows = model, columns = corpus, cells "loss [ci_low, ci_high]" (final checkpoints)."""
    fin = final_zero_shot(zs)
    order, corpora = _ordered(fin["model"], order), _ordered(fin["corpus"], order)
    rows = []
    for m in order:
        row: dict[str, Any] = {"model": m}
        for c in corpora:
            hit = fin[(fin["model"] == m) & (fin["corpus"] == c)]
            if hit.empty:
                row[c] = ""
                continue
            r = hit.iloc[0]
            if with_ci and {"ci_low", "ci_high"} <= set(hit.columns):
                row[c] = f"{r['loss_nats']:.4f} [{r['ci_low']:.4f}, {r['ci_high']:.4f}]"
            else:
                row[c] = float(r["loss_nats"])
        rows.append(row)
    return pd.DataFrame(rows)


def _cross_domain(study: Any, figdir: Path) -> Section:
    s = Section("cross-domain", "Cross-domain evaluation")
    s.h3("Zero-shot loss matrix")
    tables, why = _tables(study, "evaluate")
    if tables is None or "zero_shot" not in tables:
        s.missing(why or "evaluate wrote no zero_shot table")
    else:
        zs = tables["zero_shot"]
        s.p(
            "Cross-entropy (nats per character) of each model's final checkpoint on each "
            "corpus's whole validation split, with a 95 % bootstrap confidence interval over "
            "windows; rows are models, columns corpora, as in the study's table."
        )
        s.table(
            zero_shot_matrix(zs, order=study.corpora()),
            "This run: loss [95 % CI] of the model in each row on the corpus in each column",
            "eval/zero_shot.csv",
        )
        pub = pd.DataFrame([{"model": m, **row} for m, row in PUBLISHED_ZERO_SHOT.items()])
        s.table(pub, "The study's published matrix (larger models trained far longer)")
        fin = final_zero_shot(zs)
        try:
            from .figures import plot_zero_shot_vs_study

            path = plot_zero_shot_vs_study(
                fin, PUBLISHED_ZERO_SHOT, figdir / "zero_shot_vs_study.png"
            )
            s.figure(path, "Zero-shot loss: this run (with 95 % CI) beside the study's values")
        except Exception as e:  # the figure is a convenience; the tables above carry the data
            s.note(f"(comparison figure not drawn: {type(e).__name__}: {e})")
        for p in _pngs(study, "eval"):
            s.figure(p, _caption(p))
    s.h3("Few-shot adaptation")
    tables, why = _tables(study, "adapt")
    if tables is None:
        s.missing(why)
    else:
        s.p(
            "Each model is trained further on every other corpus, starting from its final "
            "checkpoint, from an early checkpoint, and (as a baseline) from scratch, with the "
            "same budget; the target-domain validation loss is recorded along the way."
        )
        for p in _pngs(study, "adapt"):
            if p.parent == study.root / "adapt":
                s.figure(p, _caption(p))
        if "summary" in tables:
            s.table(
                _adapt_view(tables["summary"]),
                "Target-corpus loss after adaptation by start point (mean ± std over seeds; "
                "Δ = early − final, paired by seed), and the verdict per pair",
                "adapt/summary.csv",
            )
        samples = _adapt_samples(study)
        if samples:
            s.h3("Samples of the adapted models")
            s.p(
                "The study judged adaptation by tone; a fixed-seed sample of each adapted "
                "model (final start, first seed) shows it."
            )
            for title, rows in samples.items():
                s.blocks.append(Block("sample", title, rows=rows))
        s.note("All curves and runs: adapt/curves.csv, adapt/final.csv.")
    return s


def _pm(mean: Any, std: Any) -> str:
    if mean is None or pd.isna(mean):
        return ""
    return f"{mean:.3f}" + ("" if std is None or pd.isna(std) else f" ± {std:.3f}")


def _adapt_view(summary: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for r in summary.to_dict("records"):
        early_it = r.get("early_iteration")
        rows.append(
            {
                "pair": f"{r.get('source')} → {r.get('target')}",
                "seeds": r.get("n_seeds"),
                "final start": _pm(r.get("final_mean"), r.get("final_std")),
                "early start": _pm(r.get("early_mean"), r.get("early_std"))
                + ("" if early_it is None or pd.isna(early_it) else f" (@{int(early_it)})"),
                "scratch": _pm(r.get("scratch_mean"), r.get("scratch_std")),
                "Δ early − final": _pm(r.get("delta_early_minus_final"), r.get("delta_spread")),
                "forgetting (final start)": r.get("forgetting_final"),
                "verdict": r.get("verdict", ""),
            }
        )
    return pd.DataFrame(rows)


def _adapt_samples(study: Any) -> dict[str, list[dict[str, Any]]]:
    """Samples of the adapted models (final start, lowest seed), by pair."""
    from .io import read_jsonl

    path = study.root / "adapt" / "samples.jsonl"
    if not path.is_file():
        return {}
    rows = read_jsonl(path)
    out: dict[str, list[dict[str, Any]]] = {}
    seeds = sorted({r.get("seed", 0) for r in rows})
    for r in rows:
        if r.get("start", "final") != "final" or r.get("seed", 0) != (seeds[0] if seeds else 0):
            continue
        title = f"{display(r.get('source', '?'))} model adapted to {display(r.get('target', '?'))}"
        out.setdefault(title, []).append(
            {
                "iter": r.get("step", r.get("iter")),
                "val_loss": r.get("target_loss", r.get("val_loss")),
                "text": r.get("text", ""),
            }
        )
    return out


def _by_model_and_iteration(df: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """``df`` sorted by model (in the study's order) and iteration."""
    ranked = df.assign(model=pd.Categorical(df["model"], _ordered(df["model"], order)))
    return ranked.sort_values(["model", "iteration"]).astype({"model": str})


def _figures_and_heatmap(s: Section, study: Any, sub: str, captions: dict[str, str]) -> None:
    for p in _pngs(study, sub):
        s.figure(p, captions.get(p.stem, _caption(p)))
    heatmap = study.root / sub / "heatmap.html"
    if heatmap.is_file():
        s.blocks.append(
            Block("iframe", "Text heatmaps (hover a character for its value)", path=heatmap)
        )


def _softmax(study: Any) -> Section:
    s, tables = _stage_section(study, "softmax", "Softmax inspection", "probe")
    if tables is None:
        return s
    s.p(
        "The next-character distribution of every model at every history checkpoint, on "
        "prompts drawn from every corpus's validation split (in-domain: the prompt comes from "
        "the model's own corpus): entropy in bits, the probability of the true next "
        "character, where the distributions harden, and which characters are over-predicted "
        "out of domain."
    )
    order = study.corpora()
    sm = tables.get("summary")
    if sm is not None and not sm.empty:
        wide = sm.pivot_table(
            index=["model", "iteration"], columns="domain", values=["entropy_mean", "p_true_mean"]
        )
        wide.columns = [
            f"{'entropy (bits)' if v == 'entropy_mean' else 'p(true)'} {d}-domain"
            for v, d in wide.columns
        ]
        s.table(
            _by_model_and_iteration(wide.reset_index(), order),
            "Mean entropy and p(true) at the last position of the prompts, by checkpoint",
            "probe/summary.csv",
        )
    hard = tables.get("hardening")
    if hard is not None and not hard.empty:
        cols = [
            c
            for c in (
                "model",
                "domain",
                "hardening_iteration",
                "reached",
                "final_iteration",
                "last_js_bits",
                "p_true_settled_iteration",
            )
            if c in hard.columns
        ]
        eps = hard["epsilon"].iloc[0] if "epsilon" in hard.columns else None
        s.table(
            hard[cols],
            "Where probabilities harden: the first iteration from which the mean Jensen–Shannon "
            f"divergence between consecutive checkpoints stays below {eps} bits",
            "probe/hardening.csv",
        )
    over = tables.get("overpredicted")
    if over is not None and not over.empty:
        top = over[over["rank"] <= 5] if "rank" in over.columns else over
        cols = [c for c in ("model", "label", "mean_prob", "corpus_freq", "excess") if c in top]
        s.table(
            top[cols],
            "Most over-predicted characters on out-of-domain prompts (final checkpoint): mean "
            "predicted probability minus the character's frequency in the prompts' corpus",
            "probe/overpredicted.csv",
        )
    _figures_and_heatmap(
        s,
        study,
        "probe",
        {
            "entropy": "Entropy of the next-character distribution along training",
            "p_true": "Probability of the true next character along training",
            "entropy_positions": "Entropy at each position of the prompt",
        },
    )
    s.note("The study's Part 3 claims are checked against these numbers in the Conclusions.")
    return s


def _final_rows(
    df: pd.DataFrame, method: str = "grad_norm", domain: str | None = "in"
) -> pd.DataFrame:
    """Rows of each model's last iteration for one method (and domain)."""
    d = df[df["method"] == method] if "method" in df.columns else df
    if domain is not None and "domain" in d.columns:
        d = d[d["domain"] == domain]
    if "iteration" in d.columns and not d.empty:
        last = d.groupby("model")["iteration"].transform("max")
        d = d[d["iteration"] == last]
    return d


def _final_by_model(df: pd.DataFrame, columns: str, order: list[str]) -> pd.DataFrame:
    """Mean magnitude of each model's final rows (grad_norm, in-domain) by ``columns``,
    one row per model in the study's order."""
    wide = _final_rows(df).pivot_table(index="model", columns=columns, values="mean_magnitude")
    return wide.reindex(_ordered(wide.index, order))


def _interpretability(study: Any) -> Section:
    s, tables = _stage_section(
        study, "interpretability", "Interpretability: gradient-based attributions", "saliency"
    )
    if tables is None:
        return s
    s.p(
        "Attribution of log p(true next character) to each input character, by the study's "
        "method (the L2 norm of the gradient with respect to the input embedding) and by "
        "input × gradient and integrated gradients; aggregated by character class, by position "
        "relative to the target, along training, zero- vs few-shot; and a deletion test of "
        "how faithful each method is."
    )
    order = study.corpora()
    bc = tables.get("by_class")
    if bc is not None and not bc.empty:
        s.table(
            _final_by_model(bc, "char_class", order).reset_index(),
            "Mean gradient norm per character, by class (final checkpoint, in-domain prompts)",
            "saliency/by_class.csv",
        )
    rp = tables.get("by_relpos")
    if rp is not None and not rp.empty:
        s.table(
            _final_by_model(rp, "relpos", order).reset_index(),
            "Mean gradient norm per character, by position relative to the target "
            "(final checkpoint, in-domain prompts)",
            "saliency/by_relpos.csv",
        )
    ck = tables.get("by_checkpoint")
    if ck is not None and not ck.empty:
        d = ck[(ck["method"] == "grad_norm") & (ck["domain"] == "in")]
        cols = [
            c for c in ("model", "iteration", "total_magnitude_mean", "log_p_true_mean") if c in d
        ]
        s.table(
            d[cols],
            "Total gradient norm per prompt along training (in-domain prompts)",
            "saliency/by_checkpoint.csv",
        )
    zf = tables.get("zero_few")
    if zf is not None and not zf.empty:
        t = zf[(zf["group_kind"] == "total") & (zf["method"] == "grad_norm")]
        if not t.empty:
            wide = t.pivot_table(
                index=["source", "target", "start"],
                columns="stage",
                values=["mean_magnitude", "log_p_true_mean"],
            )
            wide.columns = [f"{a} {b}".replace("_", " ") for a, b in wide.columns]
            s.table(
                wide.reset_index(),
                "Zero- vs few-shot: the same target-corpus prompts through the source model "
                "before and after adaptation (gradient norm, mean over seeds)",
                "saliency/zero_few.csv",
            )
    ver = tables.get("verdicts")
    if ver is not None and not ver.empty:
        s.table(
            ver,
            "Faithfulness (deletion test): deleting the top-k attributed characters vs k "
            "random ones; faithful when the extra drop in log p(true) has a 95 % CI above zero",
            "saliency/verdicts.csv",
        )
    _figures_and_heatmap(s, study, "saliency", {})
    s.note("The study's Part 4 claims are checked against these numbers in the Conclusions.")
    return s


def _quality(study: Any) -> Section:
    s, tables = _stage_section(study, "quality", "Sample quality", "quality")
    if tables is None:
        return s
    s.p(
        "What the samples show, measured: the share of generated words (of 4 letters or "
        "more) that occur in the corpus, the share of spaces, repetitiveness (zlib ratio, "
        "distinct 4-grams) and the nearest corpus in style, along training and after "
        "adaptation."
    )
    tl = tables.get("timeline")
    if tl is not None and not tl.empty:
        cols = [
            c
            for c in ("val_loss", "long_word_known", "space_share", "distinct_char_4", "zlib_ratio")
            if c in tl.columns
        ]
        view = tl.groupby(["model", "iteration"], sort=False)[cols].mean().reset_index()
        s.table(
            _by_model_and_iteration(view, study.corpora()),
            "Along training: mean over the samples of each checkpoint",
            "quality/timeline.csv",
        )
    _figures_and_heatmap(s, study, "quality", {})
    s.note("The study's judgements of its samples are checked in the Conclusions.")
    return s


# --- conclusions ---------------------------------------------------------------------


@dataclass
class Claim:
    section: str
    claim: str
    verdict: str
    evidence: str


def _verdict(flags: list[bool]) -> str:
    if not flags:
        return UNMEASURED
    if all(flags):
        return HOLDS
    return PARTLY if any(flags) else FAILS


def _claims_view(df: pd.DataFrame, section: str) -> pd.DataFrame:
    """Claims rows (claim, holds, evidence) of a stage -> the conclusions' columns."""
    rows = []
    for r in df.to_dict("records"):
        holds = r.get("holds")
        if isinstance(holds, str):
            verdict = (
                holds
                if holds in _VERDICT_CLASS
                else {"true": HOLDS, "false": FAILS, "": UNMEASURED}.get(holds.lower(), holds)
            )
        elif holds is None or (isinstance(holds, float) and math.isnan(holds)):
            verdict = UNMEASURED
        else:
            verdict = HOLDS if bool(holds) else FAILS
        claim = str(r.get("claim", ""))
        for extra in ("model", "scope", "measure"):
            value = r.get(extra)
            if value is not None and not pd.isna(value) and str(value):
                claim += f" [{extra}: {value}]"
        rows.append(
            {
                "section": r.get("section", section),
                "claim": claim,
                "verdict": verdict,
                "evidence": "" if pd.isna(r.get("evidence")) else str(r.get("evidence", "")),
            }
        )
    return pd.DataFrame(rows, columns=["section", "claim", "verdict", "evidence"])


def _corpus_claims(study: Any) -> list[Claim]:
    sec = "Corpora"
    tables, _ = _tables(study, "stats")
    names = ("shakespeare", "math", "wikipedia")
    if tables is None:
        return [Claim(sec, "Wikipedia has the most varied characters", UNMEASURED, "no statistics")]
    sm = tables["summary"].set_index("corpus")
    out = []
    have = [n for n in names if n in sm.index]
    if len(have) == 3:
        u = sm["unique_characters"]
        best = u.idxmax()
        ev = ", ".join(f"{display(n)} {u[n]}" for n in sm.index)
        out.append(
            Claim(
                sec,
                "Wikipedia has the most varied characters (study: 292 vs 110 and 65)",
                HOLDS if best == "wikipedia" else FAILS,
                f"unique characters: {ev}",
            )
        )
        num = sm["digit_share"] + sm["math_symbol_share"]
        best = num.idxmax()
        ev = ", ".join(f"{display(n)} {100 * num[n]:.2f} %" for n in sm.index)
        out.append(
            Claim(
                sec,
                "Math makes heavy use of numbers and symbols",
                HOLDS if best == "math" else FAILS,
                f"digits + math symbols: {ev}",
            )
        )
        n_sh = int(sm.loc["shakespeare", "non_ascii_unique"])
        out.append(
            Claim(
                sec,
                "Shakespeare has no unusual symbols",
                HOLDS if n_sh == 0 else FAILS,
                f"{n_sh} non-ASCII characters in Shakespeare",
            )
        )
    else:
        out.append(
            Claim(
                sec,
                "Wikipedia has the most varied characters",
                UNMEASURED,
                "needs the three built-in corpora",
            )
        )
    return out


def _training_claims(study: Any) -> list[Claim]:
    sec = "Training"
    tables, _ = _tables(study, "train")
    out = []
    if tables is None or tables["summary"].empty:
        return [Claim(sec, "Loss decreases with training", UNMEASURED, "no trained model")]
    sm = tables["summary"].set_index("model")
    sm = sm.loc[_ordered(sm.index, study.corpora())].reset_index()
    flags, ev = [], []
    for r in sm.to_dict("records"):
        a, b = r["initial_val_loss"], r["final_val_loss"]
        if a is None or b is None or pd.isna(a) or pd.isna(b):
            continue
        flags.append(b < a)
        ev.append(
            f"{display(r['model'])}: {a:.2f} → {b:.2f} nats between iterations 0 and {r['iterations']}"
        )
    out.append(
        Claim(sec, "Loss decreases with training", _verdict(flags), "; ".join(ev) or "no losses")
    )
    sh = sm[sm["model"] == "shakespeare"]
    if not sh.empty:
        v = float(sh["final_val_loss"].iloc[0])
        out.append(
            Claim(
                sec,
                f"The Shakespeare model beats nanoGPT's CPU recipe (val loss {NANOGPT_CPU_VAL_LOSS})",
                HOLDS if v < NANOGPT_CPU_VAL_LOSS else FAILS,
                f"Shakespeare val loss {v:.4f} after {int(sh['iterations'].iloc[0])} iterations",
            )
        )
    return out


def _own_is_lowest(
    loss: pd.DataFrame, names: list[str], evidence: Callable[[str, str, pd.Series], str]
) -> tuple[list[bool], list[str]]:
    """For each name, whether the lowest loss of column ``loss[name]`` is at its own row,
    and the evidence ``evidence(name, lowest, column)``."""
    flags, ev = [], []
    for name in names:
        col = loss[name].dropna()
        best = col.idxmin()
        flags.append(best == name)
        ev.append(evidence(name, best, col))
    return flags, ev


def _zero_shot_claims(study: Any) -> list[Claim]:
    sec = "Cross-domain"
    tables, _ = _tables(study, "evaluate")
    if tables is None or "zero_shot" not in tables:
        return [
            Claim(
                sec,
                "Each model's loss is lowest on its own corpus",
                UNMEASURED,
                "no zero-shot matrix",
            )
        ]
    fin = final_zero_shot(tables["zero_shot"])
    loss = fin.pivot_table(index="model", columns="corpus", values="loss_nats")
    models = [m for m in _ordered(loss.index, study.corpora()) if m in loss.columns]
    out = []
    flags, ev = _own_is_lowest(
        loss.T,
        models,
        lambda m, best, row: (
            f"{display(m)} model: own {row[m]:.2f}, best {display(best)} {row[best]:.2f}"
        ),
    )
    out.append(
        Claim(
            sec,
            "Each model's loss is lowest on its own corpus",
            _verdict(flags),
            "; ".join(ev) or "no in-domain pair",
        )
    )
    flags, ev = _own_is_lowest(
        loss,
        models,
        lambda c, best, col: (
            f"{display(c)}: own model {col[c]:.2f}, best {display(best)} model {col[best]:.2f}"
        ),
    )
    out.append(
        Claim(
            sec,
            "Each corpus is predicted best by the model trained on it",
            _verdict(flags),
            "; ".join(ev) or "no in-domain pair",
        )
    )
    flags, ev = [], []
    for m, row in PUBLISHED_ZERO_SHOT.items():
        if m not in loss.index:
            continue
        foreign = [c for c in row if c != m and c in loss.columns]
        if len(foreign) < 2:
            continue
        theirs = max(foreign, key=lambda c: row[c])
        ours_row = loss.loc[m, foreign].dropna()
        if ours_row.empty:
            continue
        ours = ours_row.idxmax()
        flags.append(ours == theirs)
        ev.append(
            f"{display(m)} model: hardest {display(ours)} ({ours_row[ours]:.2f}); study: {display(theirs)}"
        )
    out.append(
        Claim(
            sec,
            "The hardest foreign corpus of each model is the study's (Math for Shakespeare and Wikipedia, Shakespeare for Math)",
            _verdict(flags),
            "; ".join(ev) or "needs the three built-in corpora",
        )
    )
    return out


def _adapt_claims(study: Any) -> list[Claim]:
    from .adapt import across_pairs

    sec = "Cross-domain"
    tables, _ = _tables(study, "adapt")
    if tables is None:
        return [
            Claim(
                sec,
                "200 iterations on a new corpus give partial adaptation",
                UNMEASURED,
                "no adaptation results",
            ),
            Claim(
                sec, "Partial training makes adaptation easier", UNMEASURED, "no adaptation results"
            ),
        ]
    out = []
    if "claims" in tables:
        out += [Claim(**r) for r in _claims_view(tables["claims"], sec).to_dict("records")]
    final = tables.get("final")
    zs = _tables(study, "evaluate")[0]
    if final is not None and {"target_loss", "target_loss_step0", "start"} <= set(final.columns):
        fin = (
            final[final["start"] == "final"]
            .groupby(["source", "target"])[["target_loss", "target_loss_step0"]]
            .mean()
        )
        own: dict[str, float] = {}
        if zs is not None and "zero_shot" in zs:
            z = final_zero_shot(zs["zero_shot"])
            own = {
                r["corpus"]: float(r["loss_nats"])
                for r in z.to_dict("records")
                if r["model"] == r["corpus"]
            }
        flags, ev = [], []
        for (src, tgt), r in fin.iterrows():
            better = r["target_loss"] < r["target_loss_step0"]
            gap = own.get(tgt)
            partial = better and (gap is None or r["target_loss"] > gap)
            flags.append(bool(partial))
            tail = f", in-domain model {gap:.2f}" if gap is not None else ""
            ev.append(
                f"{display(src)} → {display(tgt)}: {r['target_loss_step0']:.2f} → "
                f"{r['target_loss']:.2f}{tail}"
            )
        out.append(
            Claim(
                sec,
                "Continued training on a new corpus gives partial adaptation: the target loss "
                "falls, but stays above the in-domain model's",
                _verdict(flags),
                "; ".join(ev) or "no final-start runs",
            )
        )
        drops = (fin["target_loss_step0"] - fin["target_loss"]).groupby(level="source").mean()
        if "shakespeare" in drops.index and len(drops) >= 2:
            slowest = drops.idxmin()
            out.append(
                Claim(
                    sec,
                    "The Shakespeare model adapts to new domains most slowly",
                    HOLDS if slowest == "shakespeare" else FAILS,
                    "mean fall of the target loss over the adaptation: "
                    + ", ".join(f"{display(m)} model {v:.2f}" for m, v in drops.items()),
                )
            )
    summary = tables.get("summary")
    if summary is not None and "verdict" in summary.columns:
        verdicts = summary["verdict"].astype(str)
        early = int(verdicts.str.startswith("early start adapts better").sum())
        final_better = int(verdicts.str.startswith("final start adapts better").sum())
        unclear = int(verdicts.str.startswith("no clear difference").sum())
        conclusive = early + final_better + unclear
        n = len(verdicts)
        pooled = across_pairs(summary)
        if conclusive:
            verdict = HOLDS if early == conclusive else (FAILS if early == 0 else PARTLY)
            evidence = (
                f"early start better in {early}, final start better in {final_better}, "
                f"no clear difference in {unclear} of {conclusive} pairs (adapt/summary.csv)"
            )
        elif pooled is None:
            verdict = UNMEASURED
            evidence = f"{n} pairs, none with a spread across seeds (run adapt with seeds >= 2)"
        else:  # one seed per pair: the pairs are the replicates
            significant = pooled["sign_p"] < 0.05
            early_wins = pooled["early_better"] > pooled["final_better"]
            verdict = HOLDS if significant and early_wins else FAILS
            evidence = "no pair has a spread across seeds, so the pairs are the replicates"
        if pooled is not None:
            evidence += (
                f"; over all {pooled['n_pairs']} pairs the early start ends lower in "
                f"{pooled['early_better']} and the final start in {pooled['final_better']}, "
                f"mean Δ early − final {pooled['mean_delta']:+.3f} nats (95 % CI "
                f"{pooled['ci_low']:+.3f} to {pooled['ci_high']:+.3f}), sign test "
                f"p = {pooled['sign_p']:.3g}"
            )
        out.append(
            Claim(
                sec,
                'Partial training makes adaptation easier (the study: "not entirely clear")',
                verdict,
                evidence,
            )
        )
    return out


def _saliency_claims(study: Any) -> list[Claim]:
    """The study's Part 4 statements, checked on the saliency tables."""
    sec = "Interpretability"
    tables, why = _tables(study, "saliency")
    if tables is None:
        return [Claim(sec, "Vowels receive the highest gradient norms", UNMEASURED, why)]
    if "claims" in tables and not tables["claims"].empty:
        return [Claim(**r) for r in _claims_view(tables["claims"], sec).to_dict("records")]
    out: list[Claim] = []
    order = study.corpora()
    bc = tables.get("by_class")
    if bc is not None and not bc.empty:
        wide = _final_by_model(bc, "char_class", order)
        flags, ev = [], []
        for m, row in wide.iterrows():
            row = row.dropna()
            top = row.idxmax()
            flags.append(top == "vowel")
            ev.append(
                f"{display(m)} model: highest {top} {row[top]:.3g}"
                + (f", vowel {row['vowel']:.3g}" if "vowel" in row and top != "vowel" else "")
            )
        out.append(
            Claim(
                sec,
                "Vowels receive the highest gradient norms (per character, in-domain, final checkpoint)",
                _verdict(flags),
                "; ".join(ev),
            )
        )
        f = _final_rows(bc)
        if "math" in wide.index and "lift" in f.columns:
            lift = f[f["model"] == "math"].set_index("char_class")["lift"]
            if {"digit", "math_symbol"} <= set(lift.index):
                d, ms = float(lift["digit"]), float(lift["math_symbol"])
                out.append(
                    Claim(
                        sec,
                        "The Math model relies heavily on digits and symbols",
                        HOLDS if d > 1 and ms > 1 else (PARTLY if d > 1 or ms > 1 else FAILS),
                        f"share of attribution relative to the characters' share (lift): digits "
                        f"{d:.2f}, math symbols {ms:.2f} (> 1: more than their frequency)",
                    )
                )
    rp = tables.get("by_relpos")
    if rp is not None and not rp.empty:
        wide = _final_by_model(rp, "relpos", order)
        if {"previous_word", "current_word"} <= set(wide.columns):
            flags = [bool(r["previous_word"] > r["current_word"]) for _, r in wide.iterrows()]
            ev = [
                f"{display(m)} model: previous word {r['previous_word']:.3g}, current word "
                f"{r['current_word']:.3g}"
                for m, r in wide.iterrows()
            ]
            out.append(
                Claim(
                    sec,
                    "Characters of the previous word often have stronger gradients than those "
                    "of the current word",
                    _verdict(flags),
                    "; ".join(ev),
                )
            )
    ck = tables.get("by_checkpoint")
    if ck is not None and not ck.empty:
        d = ck[(ck["method"] == "grad_norm") & (ck["domain"] == "in")]
        flags, ev = [], []
        for m in _ordered(d["model"], order):
            g = d[d["model"] == m].sort_values("iteration")
            if len(g) < 3:
                continue
            vals = g["total_magnitude_mean"].to_numpy()
            peak = int(vals.argmax())
            flags.append(peak < len(vals) - 1 and vals[-1] < vals[-2])
            seq = ", ".join(f"{int(i)}: {v:.3g}" for i, v in zip(g["iteration"], vals, strict=True))
            ev.append(f"{display(m)} model ({seq})")
        if flags:
            out.append(
                Claim(
                    sec,
                    "Gradient norms shrink as training converges (the last checkpoint below "
                    "the one before it and below the peak)",
                    _verdict(flags),
                    "total gradient norm per prompt by iteration: " + "; ".join(ev),
                )
            )
    ver = tables.get("verdicts")
    if ver is not None and not ver.empty and "grad_norm" in set(ver["method"]):
        r = ver[ver["method"] == "grad_norm"].iloc[0]
        faithful = str(r["verdict"]) == "faithful"
        out.append(
            Claim(
                sec,
                "A high gradient norm does not always mean a character matters (the study's caution)",
                FAILS if faithful else HOLDS,
                f"deletion test of grad_norm: {r['verdict']}; {r.get('evidence', '')}",
            )
        )
    return out or [Claim(sec, "Vowels receive the highest gradient norms", UNMEASURED, "no tables")]


_QUALITY_PLACEHOLDERS = (
    "Around iteration 100 spaces appear between words; meaningful words by 800–1000",
    "Wikipedia required a lower loss (≈ 1.0–1.1) than the others for convincing samples",
    "Samples do not become repetitive late in training",
)


def conclusions(study: Any) -> pd.DataFrame:
    """Every claim of the study that this run can check, with its verdict and evidence."""
    claims: list[Claim] = []
    claims += _corpus_claims(study)
    claims += _training_claims(study)
    claims += _zero_shot_claims(study)
    claims += _adapt_claims(study)
    tables, why = _tables(study, "probe")
    if tables is not None and "claims" in tables:
        claims += [
            Claim(**r)
            for r in _claims_view(tables["claims"], "Softmax inspection").to_dict("records")
        ]
    else:
        claims.append(
            Claim("Softmax inspection", "Entropy decreases as training progresses", UNMEASURED, why)
        )
    claims += _saliency_claims(study)
    tables, why = _tables(study, "quality")
    if tables is not None and "claims" in tables:
        claims += [
            Claim(**r) for r in _claims_view(tables["claims"], "Sample quality").to_dict("records")
        ]
    else:
        claims += [Claim("Sample quality", t, UNMEASURED, why) for t in _QUALITY_PLACEHOLDERS]
    return pd.DataFrame(
        [c.__dict__ for c in claims], columns=["section", "claim", "verdict", "evidence"]
    )


def _conclusions_section(table: pd.DataFrame) -> Section:
    s = Section("conclusions", "Conclusions: the study's claims checked on this run")
    counts = table["verdict"].value_counts()
    parts = [
        f"{counts.get(v, 0)} {v}" for v in (HOLDS, PARTLY, FAILS, UNMEASURED) if counts.get(v, 0)
    ]
    s.p(
        f"{len(table)} claims: " + ", ".join(parts) + ". Each verdict is computed from "
        'this run\'s tables and the evidence gives the numbers it rests on; "not measured" '
        "means this run has no data that can test the claim (for example, a run that ends "
        "before the iteration the claim is about). Small models trained briefly need not "
        "reproduce a study of larger models trained far longer."
    )
    sections = list(dict.fromkeys(table["section"]))
    overview = table.groupby(["section", "verdict"], sort=False).size().unstack(fill_value=0)
    overview = overview.reindex(sections)
    overview = overview[[v for v in (HOLDS, PARTLY, FAILS, UNMEASURED) if v in overview]]
    s.table(overview.reset_index(), "Verdicts by part of the study", max_rows=-1)
    for sec in sections:
        s.h3(sec)
        part = table[table["section"] == sec][["claim", "verdict", "evidence"]]
        s.table(part, "", "report/conclusions.csv", max_rows=-1)
    return s


# --- entry point ---------------------------------------------------------------------


def build_sections(study: Any, figdir: Path) -> tuple[list[Section], pd.DataFrame]:
    figdir.mkdir(parents=True, exist_ok=True)
    builders: list[tuple[str, Callable[[], Section]]] = [
        ("overview", lambda: _overview(study)),
        ("corpora", lambda: _corpora(study)),
        ("training", lambda: _training(study, figdir)),
        ("cross-domain", lambda: _cross_domain(study, figdir)),
        ("softmax", lambda: _softmax(study)),
        ("interpretability", lambda: _interpretability(study)),
        ("quality", lambda: _quality(study)),
    ]
    sections = []
    for sid, build in builders:
        try:
            sections.append(build())
        except Exception as e:  # one broken section must not hide the others
            broken = Section(sid, sid.replace("-", " ").capitalize())
            broken.missing(f"this section could not be built: {type(e).__name__}: {e}")
            sections.append(broken)
    try:
        table = conclusions(study)
    except Exception as e:
        table = pd.DataFrame(
            [
                {
                    "section": "Report",
                    "claim": "conclusions",
                    "verdict": UNMEASURED,
                    "evidence": f"{type(e).__name__}: {e}",
                }
            ]
        )
    sections.append(_conclusions_section(table))
    return sections, table


def write_report(study: Any, *, progress: bool = False, log: Log = print) -> dict[str, Path]:
    """Write ``report.html``, ``report.md`` and ``report/`` (conclusions, figures)."""
    root = study.root
    figdir = root / "report"
    sections, table = build_sections(study, figdir)
    name = study.spec.get("name", root.name)
    title = f"Domain-specific GPT study: {name}"
    subtitle = f"Run directory {root.resolve()}; corpora: " + ", ".join(
        display(c) for c in study.corpora()
    )
    paths = {
        "conclusions": atomic_write_text(
            figdir / "conclusions.csv", table.to_csv(index=False, lineterminator="\n")
        )
    }
    for p in sorted(figdir.glob("*.png")):
        paths[p.stem] = p
    paths["html"] = atomic_write_text(root / "report.html", render_html(title, subtitle, sections))
    paths["md"] = atomic_write_text(
        root / "report.md", render_markdown(title, subtitle, sections, root)
    )
    missing = sum(b.kind == "missing" for s in sections for b in s.blocks)
    log(f"report: {paths['html']} ({missing} missing part{'s' if missing != 1 else ''})")
    return paths
