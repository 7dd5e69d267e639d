"""The report: one self-contained HTML file and a Markdown twin, built from the run's
tables; hostile text from corpora and samples is shown, never interpreted."""

from __future__ import annotations

import base64
import json
import re
from html import escape
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from tests.conftest import run_one

from domaingpt.core import published
from domaingpt.core.claims import Verdict
from domaingpt.report.document import Section
from domaingpt.report.html import render_html
from domaingpt.report.markdown import render_markdown
from domaingpt.study import Study

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)> & </td></table>'


class Collector(HTMLParser):
    """Tags, attributes and text of a document, and whether it parsed cleanly."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.stack: list[str] = []
        self.mismatched: list[str] = []

    VOID = frozenset({"meta", "img", "br", "hr", "input", "link"})

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if self.stack and self.stack[-1] == tag:
            self.stack.pop()
        else:
            self.mismatched.append(tag)

    def handle_data(self, data):
        self.text.append(data)

    def of(self, tag: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags if t == tag]


def parse(html: str) -> Collector:
    c = Collector()
    c.feed(html)
    c.close()
    return c


@pytest.fixture(scope="module")
def smoke(smoke_study):
    return smoke_study


def _tiny_png(tmp_path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1], [0, 1])
    path = tmp_path / "fig.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def test_hostile_text_is_escaped_everywhere(tmp_path):
    s = Section("x", f"Title {HOSTILE}")
    s.p(HOSTILE)
    s.note(HOSTILE)
    s.missing(HOSTILE)
    s.table(pd.DataFrame({HOSTILE: [HOSTILE, "ok|pipe\nnewline"], "n": [1.5, 2.0]}), HOSTILE)
    s.figure(_tiny_png(tmp_path), HOSTILE)
    s.samples(HOSTILE, [{"iter": 0, "val_loss": 1.0, "text": HOSTILE}])
    html = render_html(HOSTILE, HOSTILE, [s])
    doc = parse(html)
    assert not doc.mismatched and not doc.stack
    assert doc.of("script") == [] and doc.of("table") != []
    imgs = doc.of("img")
    assert len(imgs) == 1 and imgs[0]["src"].startswith("data:image/png;base64,")
    assert "onerror" not in imgs[0]
    # The text survives as text: every copy of it is in the parsed text content.
    assert sum(HOSTILE in t for t in doc.text) >= 5
    assert "<script>" not in html

    md = render_markdown(HOSTILE, HOSTILE, [s], tmp_path)
    assert "<script>" not in md.replace("```text\n" + HOSTILE, "")
    table_lines = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(table_lines) == 4  # header, rule, 2 rows: the pipe and newline split no row
    assert all(line.count(" | ") == 1 for line in table_lines)
    assert "![" in md and "(fig.png)" in md


def test_sample_fences_outlast_backticks(tmp_path):
    s = Section("x", "x")
    text = "code ```` inside"
    s.samples("m", [{"iter": 1, "val_loss": 2.0, "text": text}])
    md = render_markdown("t", "s", [s], tmp_path)
    assert "`````text\n" + text + "\n`````" in md


def test_smoke_report_is_self_contained_and_complete(smoke):
    html = (smoke.root / "report.html").read_text(encoding="utf-8")
    doc = parse(html)
    assert not doc.mismatched, doc.mismatched[:5]
    assert doc.of("script") == [] and doc.of("link") == []
    ids = {a.get("id") for _, a in doc.tags}
    for section in ("overview", "corpora", "training", "cross-domain", "softmax", "conclusions"):
        assert section in ids
    imgs = doc.of("img")
    assert len(imgs) >= 5
    for img in imgs:
        src = img["src"] or ""
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    # Nothing is fetched: no attribute points outside the document.
    for _, attrs in doc.tags:
        for key in ("src", "href"):
            value = attrs.get(key) or ""
            assert value.startswith(("data:", "#")) or not value, (key, value[:60])
    text = " ".join(doc.text)
    assert "1.3966" in text and "2.7195" in text  # the study's matrix beside ours
    assert "iteration" in text and "Shakespeare model" in text  # the sample timeline
    assert "Missing:" not in text  # every stage of the smoke study ran


def test_report_leads_with_its_findings(smoke):
    html = (smoke.root / "report.html").read_text(encoding="utf-8")
    doc = parse(html)
    nav = '<nav id="contents">'  # the contents (the side column, on a wide window)
    sections = [a.get("id") for t, a in doc.tags if t == "section"]
    assert sections[0] == "summary" and sections[1] == "overview"
    assert html.index('id="summary"') < html.index(nav)  # before the contents
    ids = {a.get("id") for _, a in doc.tags}
    hrefs = [a["href"] for a in doc.of("a") if (a.get("href") or "").startswith("#")]
    assert len(hrefs) >= 10 and all(h[1:] in ids for h in hrefs)
    summary = html[html.index('id="summary"') : html.index(nav)]
    table = Study.load(smoke.root).conclusions
    n = table["verdict"].value_counts()
    assert f"{len(table)} claims of the study checked on this run" in summary
    assert f"{n.get('holds', 0)} hold" in summary
    assert f"{n.get('does not hold', 0)} do not hold" in summary
    assert f"{n.get('not measured', 0)} could not be tested" in summary
    # The flipped claims with their numbers; the early-vs-final answer; the matrix.
    assert "Where this run disagrees with the study" in summary
    flipped = table[table["verdict"] == "does not hold"]
    assert len(flipped)  # (the smoke run flips some)
    assert escape(flipped["claim"].iloc[0].rstrip(".")) in summary
    assert "Does partial training make adaptation easier?" in summary
    assert "sign test p =" in summary
    assert summary.count("<img") == 1 and 'href="#adaptation"' in summary
    # Long tables are collapsed; short ones are not.
    assert "<details><summary>" in html[html.index(nav) :]
    md = (smoke.root / "report.md").read_text(encoding="utf-8")
    assert md.index('<a id="summary">') < md.index("## Contents")


def test_long_tables_and_lists_collapse(tmp_path):
    s = Section("x", "x")
    s.table(pd.DataFrame({"n": range(5)}), "short")
    s.table(pd.DataFrame({"n": range(30)}), "long")
    s.items([{"text": f"item {i}", "href": "#x", "link": "x"} for i in range(11)], "more items")
    html = render_html("t", "s", [s])
    assert html.count("<details>") == 2
    assert "<summary>long (30 rows)</summary>" in html and "<summary>3 more items</summary>" in html
    md = render_markdown("t", "s", [s], tmp_path)
    assert md.count("<details>") == 2 and "- item 10 ([→ x](#x))" in md


def test_markdown_references_existing_figures(smoke):
    md = (smoke.root / "report.md").read_text(encoding="utf-8")
    refs = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert refs
    for ref in refs:
        assert not ref.startswith(("/", "http")) and (smoke.root / ref).is_file(), ref
    assert "| model |" in md and "1.3966" in md


def test_conclusions_are_checked_claims_with_evidence(smoke):
    table = Study.load(smoke.root).conclusions
    assert set(table["verdict"]) <= {str(v) for v in Verdict}
    measured = table[table["verdict"] != Verdict.UNMEASURED]
    assert len(measured) >= 5
    # A verdict rests on numbers: every measured claim's evidence has some.
    assert all(re.search(r"\d", str(e)) for e in measured["evidence"])
    claims = dict(zip(table["claim"], table["verdict"], strict=False))
    own = {
        c: json.loads(n).get("model_verdict")
        for c, n in zip(table["claim"], table["numbers"], strict=True)
    }
    # One model per domain: a claim about a domain gets no verdict, its model's is kept;
    # only claims about the corpora (stats) and about one named model keep a verdict.
    about_domains = table[(table["stage"] != "stats") & (table["per_model"].astype(str) != "True")]
    assert set(about_domains["verdict"]) <= {Verdict.ONE_MODEL, Verdict.UNMEASURED}
    assert claims[published.LOSS_DECREASES] == Verdict.ONE_MODEL
    assert own[published.LOSS_DECREASES] == Verdict.HOLDS
    assert claims[published.SHAKESPEARE_PLAIN] == Verdict.HOLDS  # about a corpus
    varied = [c for c in claims if c.startswith(published.MOST_VARIED)]
    assert varied == [f"{published.MOST_VARIED} (study: 292 vs 110 and 65)"]
    assert claims[varied[0]] == Verdict.HOLDS
    # 60 iterations of a tiny model do not beat nanoGPT's CPU recipe, and the report says so.
    beat = [c for c in claims if c.startswith("The Shakespeare model beats")]
    assert beat and claims[beat[0]] == Verdict.FAILS
    assert claims[published.OWN_MODEL_BEST] == Verdict.ONE_MODEL
    assert own[published.OWN_MODEL_BEST] == Verdict.HOLDS
    # The study's open question gets an answer over the pairs, not only per pair.
    early = table[table["claim"].str.startswith("Partial training makes adaptation easier")]
    assert len(early) == 1 and early["verdict"].iloc[0] != Verdict.UNMEASURED
    # ... with the source model as the unit (each source is in two pairs)
    evidence = early["evidence"].iloc[0]
    assert "per source model" in evidence
    assert re.search(r"permutation p = [0-9.]+, sign test p = [0-9.]+", evidence)
    assert set(published.ZERO_SHOT) == {"shakespeare", "math", "wikipedia"}


def _stem_caption(path: Path) -> str:
    stem = path.stem.replace("_", " ").replace("-", " ")
    return stem[:1].upper() + stem[1:]


def test_every_figure_says_what_it_shows_and_has_its_svg(smoke):
    """Each figure's caption is the one stored where it was drawn, never its file name;
    each PNG of the run has an SVG beside it (the vectors, for a paper)."""
    from domaingpt.report.plotting import figure_caption

    pngs = sorted(p for p in smoke.root.rglob("*.png") if "checkpoints" not in p.parts)
    assert len(pngs) >= 25
    for png in pngs:
        caption = figure_caption(png)
        assert len(caption) > 30 and caption != _stem_caption(png), png
        svg = png.with_suffix(".svg")
        assert svg.read_bytes().startswith(b"<?xml") and b"<svg" in svg.read_bytes()[:600], svg
    doc = parse((smoke.root / "report.html").read_text(encoding="utf-8"))
    imgs = doc.of("img")
    captions = [a["alt"] for a in imgs]
    assert len(imgs) >= 25 and all(len(c) > 30 for c in captions)
    assert not set(captions) & {_stem_caption(p) for p in pngs}


def test_figures_are_shown_at_print_size_within_the_page(smoke):
    """Every figure is shown 96 CSS px per inch and fits the page unscaled: 10-point
    text is 13.3 px on screen and the smallest ('small', 8.3 pt) 11 px."""
    from PIL import Image

    from domaingpt.report.plotting import REPORT_WIDTH_PX

    page = (smoke.root / "report.html").read_text(encoding="utf-8")
    for attrs in parse(page).of("img"):
        data = base64.b64decode(attrs["src"].split(",", 1)[1])
        png = Path(smoke.root / "_shown.png")
        png.write_bytes(data)
        with Image.open(png) as image:
            inches = image.width / image.info["dpi"][0]
        png.unlink()
        width = int(attrs["width"])
        assert width == pytest.approx(inches * 96, abs=1), attrs["alt"]
        assert width <= REPORT_WIDTH_PX, attrs["alt"]


def test_figures_as_files_beside_the_report(smoke, tmp_path):
    """report.embed = false: the figures (PNG, with links to PNG and SVG) go to
    report_files/ beside a small report.html; embedding again removes the folder."""
    from domaingpt.stages.report import FILES_DIR, ReportSettings, stage

    root = smoke.copy(tmp_path / "run")
    embedded = (root / "report.html").stat().st_size
    stages = Study.load(root).stages
    run_one(stage, root, ReportSettings(embed=False), stages=stages)
    page = (root / "report.html").read_text(encoding="utf-8")
    assert "data:image" not in page
    doc = parse(page)
    srcs = [a["src"] for a in doc.of("img")]
    hrefs = [a["href"] for a in doc.of("a") if a["href"].startswith(FILES_DIR)]
    assert len(srcs) >= 25 and all(s.startswith(f"{FILES_DIR}/") for s in srcs)
    assert {h for h in hrefs if h.endswith(".png")} == set(srcs)
    svgs = [h for h in hrefs if h.endswith(".svg")]
    assert len(set(svgs)) == len(set(srcs))  # every figure with its vectors
    for link in srcs + svgs:
        assert (root / link).is_file(), link
    assert (root / "report.html").stat().st_size < embedded / 5
    run_one(stage, root, ReportSettings(embed=True), stages=stages)
    assert not (root / FILES_DIR).exists()
    assert (root / "report.html").stat().st_size == pytest.approx(embedded, rel=0.01)
