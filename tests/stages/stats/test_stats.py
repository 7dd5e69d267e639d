from __future__ import annotations

import os
import unicodedata
import warnings
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest

from domaingpt.context.rundir import RunDir
from domaingpt.context.stage import StageContext
from domaingpt.core.io import append_jsonl, read_jsonl, write_json, write_jsonl
from domaingpt.data.charclass import CLASSES
from domaingpt.errors import DomainGPTError
from domaingpt.report.plotting import font_families
from domaingpt.stages.stats import results as stats_results
from domaingpt.stages.stats import stage as stats_stage
from domaingpt.stages.stats.compute import (
    CorpusStats,
    compute_stats,
    md_escape,
    summary_markdown,
    summary_table,
)
from domaingpt.stages.stats.figures import non_ascii_strip, plot_char_distribution

CORPORA = ("shakespeare", "math", "wikipedia")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _data_dir() -> Path:
    env = os.environ.get("DOMAINGPT_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def real() -> dict[str, CorpusStats]:
    d = _data_dir()
    if not all((d / f"{n}.txt").is_file() for n in CORPORA):
        pytest.skip(f"corpora not found in {d} (set DOMAINGPT_DATA)")
    out = {}
    for n in CORPORA:
        data = (d / f"{n}.txt").read_bytes()
        out[n] = compute_stats(n, data.decode("utf-8"), n_bytes=len(data))
    return out


@pytest.fixture(scope="module")
def synthetic(corpora) -> dict[str, CorpusStats]:
    """The statistics of the synthetic corpora: for what holds of any text."""
    out = {}
    for n in CORPORA:
        data = corpora.path(n).read_bytes()
        out[n] = compute_stats(n, data.decode("utf-8"), n_bytes=len(data))
    return out


# -- real corpora --------------------------------------------------------------------


def test_shakespeare(real: dict[str, CorpusStats]) -> None:
    s = real["shakespeare"]
    assert s.n_chars == 1_115_394
    assert s.n_bytes == 1_115_394
    assert s.n_unique == 65
    assert s.n_lines == 40_000
    top = s.top(5)
    assert top["char"].tolist() == [" ", "e", "t", "o", "a"]
    assert top["count"].tolist() == [169_892, 94_611, 67_009, 65_798, 55_507]
    assert top["label"].tolist() == ["<space>", "e", "t", "o", "a"]
    assert top["rank"].tolist() == [1, 2, 3, 4, 5]
    assert s.count_of("\n") == 40_000
    assert s.non_ascii_count == 0
    assert s.n_non_ascii_unique == 0
    assert not s.counts["non_ascii"].any()
    assert all(ord(ch) <= 0x7F for ch in s.notable_symbols())


def test_math(real: dict[str, CorpusStats]) -> None:
    m = real["math"]
    assert m.n_chars == 3_665_464
    assert m.n_bytes == 3_665_468
    assert m.n_unique == 98
    assert m.top(5)["char"].tolist() == [" ", "e", "t", "a", "i"]
    assert m.top(5)["count"].tolist() == [556_071, 228_805, 176_496, 161_135, 143_182]
    assert m.count_of("\n") == 51_219
    assert m.count_of("\t") == 92
    assert m.n_non_ascii_unique == 1
    assert m.notable_symbols()[0] == "\u2019"


def test_wikipedia(real: dict[str, CorpusStats]) -> None:
    w = real["wikipedia"]
    assert w.n_chars == 1_285_622
    assert w.n_unique == 259
    assert w.n_non_ascii_unique == 170
    assert w.top(5)["char"].tolist() == [" ", "e", "t", "a", "n"]
    notable = w.notable_symbols(12)
    assert len(notable) == 12
    assert all(ord(ch) > 0x7F for ch in notable)
    # Variety: CJK and Arabic letters appear among the examples, not only Latin ones.
    names = [unicodedata.name(ch) for ch in notable]
    assert any(n.startswith("CJK") for n in names)
    assert any(n.startswith("ARABIC") for n in names)
    ex = w.notable_examples(12)
    assert ex["char"].tolist() == notable
    for ch, ctx, off in zip(ex["char"], ex["context"], ex["first_offset"], strict=True):
        assert ch in ctx and off >= 0


def test_shares_sum_to_one(synthetic: dict[str, CorpusStats]) -> None:
    for s in synthetic.values():
        assert s.counts["count"].sum() == s.n_chars
        assert s.counts["share"].sum() == pytest.approx(1.0)
        cs = s.class_shares()
        assert cs["char_class"].tolist() == list(CLASSES)
        assert cs["share"].sum() == pytest.approx(1.0)
        assert cs["count"].sum() == s.n_chars
        assert cs["non_ascii_share"].sum() == pytest.approx(s.non_ascii_share)
        cat = s.category_shares()
        assert cat["share"].sum() == pytest.approx(1.0)
        assert cat["category_name"].notna().all()
        assert list(s.counts.columns) == [
            "corpus",
            "char",
            "label",
            "codepoint",
            "count",
            "share",
            "rank",
            "char_class",
            "unicode_category",
            "non_ascii",
        ]


def test_domain_differences(real: dict[str, CorpusStats]) -> None:
    sh, m, w = real["shakespeare"], real["math"], real["wikipedia"]
    assert m.class_share("digit") > sh.class_share("digit")
    assert m.class_share("math_symbol") > sh.class_share("math_symbol")
    assert m.class_share("digit") > 0.05
    assert sh.class_share("other") == 0.0
    assert w.non_ascii_share > m.non_ascii_share > sh.non_ascii_share == 0.0


def test_summary_table_and_markdown(real: dict[str, CorpusStats]) -> None:
    stats = [real[n] for n in CORPORA]
    table = summary_table(stats)
    assert table["corpus"].tolist() == list(CORPORA)
    assert table["unique_characters"].tolist() == [65, 98, 259]
    assert table.loc[0, "most_frequent"] == "<space>, e, t, o, a"
    shares = table[[f"{c}_share" for c in CLASSES]].sum(axis=1)
    assert shares.to_numpy() == pytest.approx([1.0, 1.0, 1.0])
    assert table.loc[0, "non_ascii_share"] == 0.0
    assert 0 < table.loc[0, "top_k_share"] < 1

    md = summary_markdown(stats)
    lines = md.strip().splitlines()
    assert lines[0] == (
        "| Dataset | Unique Characters | Most Frequent Characters | Notable Features |"
    )
    assert len(lines) == 2 + 3
    assert lines[2].startswith("| Shakespeare | 65 | \\<space\\>, e, t, o, a |")
    assert "ASCII only" in lines[2]
    assert lines[3].startswith("| Math | 98 |")
    assert "digits 6.8 %" in lines[3]
    assert lines[4].startswith("| Wikipedia | 259 |")
    assert "170 non-ASCII symbols" in lines[4]
    for line in lines:  # no unescaped pipe inside a cell: exactly 5 separators per row
        assert line.replace("\\|", "").count("|") == 5


def test_compute_stats_small_and_empty() -> None:
    s = compute_stats("t", "ab|a`\n万")
    assert s.n_chars == 7
    assert s.n_bytes == 9
    assert s.n_lines == 2
    assert s.top(1)["char"].tolist() == ["a"]
    # ties broken by code point
    assert s.counts["char"].tolist() == ["a", "\n", "`", "b", "|", "万"]
    e = compute_stats("empty", "")
    assert (e.n_chars, e.n_unique, e.n_lines) == (0, 0, 0)
    assert e.class_shares()["share"].sum() == 0.0
    assert e.notable_symbols() == []
    assert summary_table([e])["unique_characters"].tolist() == [0]


def test_markdown_escaping() -> None:
    assert md_escape("a|b`c") == "a\\|b\\`c"
    assert md_escape("<space>") == "\\<space\\>"
    s = compute_stats("pipe|corpus", "||||||````` x")
    md = summary_markdown([s])
    row = md.strip().splitlines()[2]
    assert row.replace("\\|", "").count("|") == 5
    assert "\\`" in row


# -- files ---------------------------------------------------------------------------


def _check_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 10_000
    h, w, *_ = matplotlib.image.imread(path).shape
    assert h > 200 and w > 200


def write_stats(stats: list[CorpusStats], root: Path) -> dict[str, Path]:
    """The stats stage's files for ``stats``, written as its run writes them."""
    return stats_results.write_stats(StageContext(RunDir(root), stats_stage), stats)


def load_stats(root: Path) -> dict[str, pd.DataFrame]:
    return stats_stage.read(RunDir(root))


def fonts_cover_the_corpora() -> bool:
    """Noto CJK and Devanagari installed (``.ci/run`` installs them on CI); without
    them the figures draw those characters as boxes and say so in one warning."""
    families = font_families()
    return "Noto Sans Devanagari" in families and any("CJK" in f for f in families)


def test_write_and_load_stats(real: dict[str, CorpusStats], tmp_path: Path) -> None:
    stats = [real[n] for n in CORPORA]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        paths = write_stats(stats, tmp_path)
    glyphs = [str(w.message) for w in caught if "Glyph" in str(w.message)]
    assert not glyphs or not fonts_cover_the_corpora()
    assert len(glyphs) <= 1  # one line per figure at most, never one per glyph
    expected = {
        "char_counts.csv",
        "class_shares.csv",
        "category_shares.csv",
        "summary.csv",
        "summary.md",
        "notable.csv",
        "class_shares.png",
        *(f"distribution_{n}.png" for n in CORPORA),
    }
    assert {p.name for p in paths.values()} == expected
    vectors = {n.replace(".png", ".svg") for n in expected if n.endswith(".png")}
    # each figure with its SVG beside it, and no temp files left
    assert {p.name for p in (tmp_path / "stats").iterdir()} == expected | vectors
    for p in paths.values():
        assert p.stat().st_size > 0
        if p.suffix == ".png":
            _check_png(p)

    tables = load_stats(tmp_path)
    counts = tables["char_counts"]
    for s in stats:
        back = counts[counts["corpus"] == s.name].reset_index(drop=True)
        pd.testing.assert_frame_equal(back, s.counts.reset_index(drop=True), check_dtype=False)
    assert counts.loc[counts["char"] == "\n", "count"].tolist() == [40_000, 51_219, 2_891]
    assert len(tables["class_shares"]) == 8 * len(stats)
    assert tables["summary"]["unique_characters"].tolist() == [65, 98, 259]
    notable = tables["notable"]
    assert set(notable["corpus"]) == set(CORPORA)

    md = (tmp_path / "stats" / "summary.md").read_text(encoding="utf-8")
    assert "| Dataset | Unique Characters | Most Frequent Characters | Notable Features |" in md
    for name in ("Shakespeare", "Math", "Wikipedia"):
        assert f"\n| {name} | " in md


def test_wikipedia_distribution_draws_every_character(
    real: dict[str, CorpusStats], tmp_path: Path
) -> None:
    """The figure lists Wikipedia's non-ASCII characters (CJK, Devanagari, Cyrillic ...),
    and the fonts draw every one: matplotlib warns of no missing glyph."""
    if not fonts_cover_the_corpora():
        if os.environ.get("CI"):
            pytest.fail("Noto CJK/Devanagari fonts missing on CI; .ci/run installs them")
        pytest.skip("apt-get install fonts-noto-cjk fonts-noto-core (CI installs them)")
    counts = real["wikipedia"].counts
    strip = non_ascii_strip(counts)
    for ch in ("詩", "ア", "ग", "ω", "д", "é"):
        assert ch in strip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = plot_char_distribution(counts, tmp_path / "wikipedia.png")
    assert [str(w.message) for w in caught if "Glyph" in str(w.message)] == []
    _check_png(path)


def test_missing_glyphs_are_reported_once(tmp_path: Path) -> None:
    """A character no font can draw (a private-use code point) is named in one warning."""
    import matplotlib.pyplot as plt

    from domaingpt.report.plotting import figure_style, save_figure

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with figure_style():
            fig, ax = plt.subplots()
            ax.set_title("\ue000\ue001 twice: \ue000")
            save_figure(fig, tmp_path / "pua.png")
    glyphs = [str(w.message) for w in caught if "Glyph" in str(w.message)]
    assert len(glyphs) == 1 and "2 character(s)" in glyphs[0] and "\ue000" in glyphs[0]


def test_csv_round_trip_of_awkward_characters(tmp_path: Path) -> None:
    text = 'a\r\n"b",c\x00\t|`万ش\u00a0\u0301 NA'
    s = compute_stats("odd", text)
    write_stats([s], tmp_path)
    back = load_stats(tmp_path)["char_counts"]
    pd.testing.assert_frame_equal(back, s.counts, check_dtype=False)
    _check_png(tmp_path / "stats" / "distribution_odd.png")


def test_write_stats_errors(tmp_path: Path) -> None:
    with pytest.raises(DomainGPTError):
        write_stats([], tmp_path)
    with pytest.raises(DomainGPTError):
        write_stats([compute_stats("x", "a"), compute_stats("x", "b")], tmp_path)
    with pytest.raises(DomainGPTError):
        load_stats(tmp_path / "missing")


def test_io_helpers(tmp_path: Path) -> None:
    p = write_json(tmp_path / "sub" / "a.json", {"path": tmp_path, "x": {1, 2}})
    assert p.read_text(encoding="utf-8").startswith("{")
    rows = [{"iter": i, "loss": 1.0 / (i + 1)} for i in range(3)]
    jl = write_jsonl(tmp_path / "m.jsonl", rows)
    append_jsonl(jl, {"iter": 3, "loss": float("nan")})
    append_jsonl(jl, [{"iter": 4}, {"iter": 5}])
    assert [r["iter"] for r in read_jsonl(jl)] == [0, 1, 2, 3, 4, 5]
    with jl.open("a", encoding="utf-8") as fh:
        fh.write('{"iter": 6, "lo')  # an interrupted append
    assert len(read_jsonl(jl)) == 6
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1}\nnot json\n{"a": 2}\n', encoding="utf-8")
    with pytest.raises(DomainGPTError, match=":2:"):
        read_jsonl(bad)
    assert sorted(q.name for q in tmp_path.iterdir()) == ["bad.jsonl", "m.jsonl", "sub"]
