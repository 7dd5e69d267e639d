"""The command line as a user meets it: small corpora, tiny models, and a clear one-line
error with exit status 2 (never a traceback) for every bad input."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import urllib.request
import warnings

import pytest

import domaingpt.cli
import domaingpt.data.download
from domaingpt.cli import build_parser, main
from domaingpt.cli.options import QUIET_HELP
from domaingpt.errors import one_line


def test_corpora_lists_the_three_with_checksums(cli, capsys, data_dir):
    code, out, _ = cli("corpora", "--data-dir", data_dir)
    assert code == 0
    for name in ("shakespeare", "math", "wikipedia"):
        assert any(line.startswith(name) and " ok " in line for line in out.splitlines())


def test_stats_writes_tables_and_figures(cli, corpora, tmp_path):
    verse = corpora.path("shakespeare")
    code, out, _ = cli("stats", verse, corpora.path("math"), "--out", tmp_path)
    assert code == 0
    assert f"| Shakespeare | {len(set(verse.read_text()))} |" in out  # unique characters
    for f in (
        "summary.md",
        "char_counts.csv",
        "distribution_shakespeare.png",
        "distribution_math.png",
    ):
        assert (tmp_path / "stats" / f).stat().st_size > 0


@pytest.fixture(scope="module")
def trained(train_smoke, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    code = train_smoke(out, "train.max_iters=30")
    assert code == 0
    return out


def test_train_then_sample_is_seeded(cli, capsys, trained):
    model = trained / "models" / "shakespeare"
    assert (trained / "vocab.json").exists() and (model / "loss.png").exists()
    a = cli("sample", model, "--prompt", "ROMEO:", "--chars", 80, "--seed", 1)
    b = cli("sample", model, "--prompt", "ROMEO:", "--chars", 80, "--seed", 1)
    c = cli("sample", model, "--prompt", "ROMEO:", "--chars", 80, "--seed", 2)
    assert a[0] == 0 and a[1] == b[1] != c[1]
    assert a[1].startswith("ROMEO:") and len(a[1]) == len("ROMEO:") + 80 + 1
    d = cli("sample", model, "--prompt", "x", "--chars", 5, "--iter", 0)
    assert d[0] == 0


def test_sample_streams_the_text_and_ctrl_c_keeps_what_was_printed(cli, trained, monkeypatch):
    """The text is written as it is sampled (the same text generate_text gives); an
    interrupt keeps every character printed before it, and exits 130."""
    import domaingpt.model.generate as generate
    from domaingpt.model.checkpoint import find_checkpoint, load_checkpoint

    model = trained / "models" / "shakespeare"
    code, out, _ = cli("sample", model, "--prompt", "ROMEO:", "--chars", "4e1", "--seed", 3)
    loaded = load_checkpoint(find_checkpoint(model))
    text = generate.generate_text(loaded.model, loaded.vocab, "ROMEO:", 40, seed=3)
    assert code == 0 and out == "ROMEO:" + text + "\n"

    real = generate.stream_text

    def interrupted(*args, **kwargs):
        chars = real(*args, **kwargs)

        def ten_then_ctrl_c():
            for i, ch in enumerate(chars):
                if i == 10:
                    raise KeyboardInterrupt
                yield ch

        return ten_then_ctrl_c()

    monkeypatch.setattr(generate, "stream_text", interrupted)
    code, out, err = cli("sample", model, "--prompt", "ROMEO:", "--chars", 40, "--seed", 3)
    assert code == 130 and "interrupted" in err
    assert out == "ROMEO:" + text[:10] + "\n"


def test_sample_warns_on_unknown_prompt_chars(cli, trained):
    code, _out, err = cli(
        "sample", trained / "models" / "shakespeare", "--prompt", "héllo\x07", "--chars", 5
    )
    assert code == 0 and "<unk>" in err and "\\x07" in err


def test_sample_escapes_keep_non_ascii_prompts_intact(cli, trained):
    """``--escapes`` decodes ``\\n`` and the like, never the UTF-8 bytes of ``é``."""
    model = trained / "models" / "shakespeare"
    code, out, err = cli("sample", model, "--escapes", "--prompt", "café\\n", "--chars", 5)
    assert code == 0, err
    assert out.startswith("café\n") and "Ã" not in out
    assert len(out) == len("café\n") + 5 + 1 and "<unk>" not in err
    code, out, _ = cli("sample", model, "--escapes", "--prompt", "a\\tb\\\\n", "--chars", 1)
    assert code == 0 and out.startswith("a\tb\\n")


def test_sample_refuses_zero_chars_with_a_usage_error(capsys, tmp_path):
    # refused by the parser, before any model is looked for: one error line, status 2
    assert main(["sample", str(tmp_path / "model"), "--chars", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert "argument --chars: expected 1 or more, got 0" in err and "Traceback" not in err


def test_train_offline_never_downloads_the_default_vocabulary_corpora(
    cli_error, data_dir, tmp_path, monkeypatch
):
    """Only Shakespeare is at hand and ``--offline`` is given: the default vocabulary
    (the built-in corpora) cannot be made, so a one-line error names the first missing
    corpus, and nothing is fetched (downloads are possible but must not be tried)."""
    fetched: list[object] = []

    def no_network(*args, **kwargs):
        fetched.append(args)
        raise OSError("no network in this test")

    monkeypatch.delenv("DOMAINGPT_OFFLINE", raising=False)  # only --offline may stop it
    monkeypatch.delenv("DOMAINGPT_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(domaingpt.data.download, "build_from_sources", no_network)
    monkeypatch.setattr(domaingpt.data.download, "fetch", no_network)
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    only = tmp_path / "data"
    only.mkdir()
    shutil.copy(data_dir / "shakespeare.txt", only)
    out = tmp_path / "run"
    argv = ["train", "shakespeare", "--offline", "--data-dir", only, "--out", out, "-q"]
    err = cli_error(*argv, "--preset", "smoke")
    assert "corpus 'math' not found" in err and "downloading is off" in err
    assert "pass --data-dir DIR (or set DOMAINGPT_DATA=DIR)" in err
    assert fetched == []
    assert not (tmp_path / "cache" / "domaingpt" / "corpora").exists()
    assert not out.exists()
    err = cli_error(*argv, "--vocab", "shakespeare,wikipedia")  # --vocab: the same
    assert "corpus 'wikipedia' not found" in err and fetched == []


def _bad_inputs(tmp_path, trained, verse):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    short = tmp_path / "short.txt"
    short.write_text("too short for a block\n")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(b"caf\xe9 au lait " * 10)
    pickle_ckpt = tmp_path / "ckpt" / "iter-0000001.safetensors"
    pickle_ckpt.parent.mkdir()
    pickle_ckpt.write_bytes(b"\x80\x04\x95garbage")
    model = trained / "models" / "shakespeare"
    return [
        (["train", "shakspeare"], "did you mean 'shakespeare'"),
        (["train", tmp_path / "missing.txt"], "does not exist"),
        (["train", empty], "empty"),
        (["train", short, "--preset", "smoke"], "too short"),
        (["train", latin1], "byte offset 3"),
        (["train", verse, "--preset", "cpu-mni"], "did you mean 'cpu-mini'"),
        (["train", verse, "--set", "train.lrr=1"], "did you mean 'train.lr'"),
        (["train", verse, "--set", "model.n_head=3"], "divisible"),
        (
            [
                "train",
                verse,
                "--preset",
                "smoke",
                "--out",
                trained,
                "--set",
                "train.lr=0.5",
            ],
            "different run",
        ),
        (["sample", tmp_path / "nomodel"], "does not exist"),
        (["sample", pickle_ckpt], "has no iter-0000001.json"),
        (["sample", model, "--iter", 7], "available: 0, 10, 25, 30"),
        (["sample", model, "--prompt", ""], "prompt is empty"),
        (["stats", tmp_path], "directory"),
    ]


def test_bad_inputs_give_one_line_errors(cli, capsys, tmp_path, trained, corpora, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a default --out (runs/NAME) would land here
    for argv, message in _bad_inputs(tmp_path, trained, corpora.path("shakespeare")):
        vocab = ["--vocab", corpora.vocab] if argv[0] == "train" else []  # not the built-ins
        code, _out, err = cli(*argv, *vocab)
        assert code == 2, (argv, err)
        assert message in err, (argv, err)
        assert err.startswith("error: ") and "Traceback" not in err
        assert err.count("\n") == 1, err


def test_console_script_runs_as_module():
    proc = subprocess.run(
        [sys.executable, "-m", "domaingpt", "train", "nope-corpus"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: unknown corpus")


# --- what every command shows: --quiet, warnings ---------------------------------------


def test_quiet_means_one_thing_for_every_command(cli, data_dir, tmp_path):
    """``--quiet``: no progress bars and no log lines; the results still print."""
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    helps = {
        name: a.help for name, p in sub.choices.items() for a in p._actions if a.dest == "quiet"
    }
    assert set(sub.choices) - set(helps) == {"compare", "runs"}  # they log nothing
    assert set(helps.values()) == {QUIET_HELP}
    argv = ("stats", "shakespeare", "--out", tmp_path, "--data-dir", data_dir, "--offline")
    code, loud, err = cli(*argv)
    assert code == 0 and "stats:" in err  # its log line
    code, out, err = cli(*argv, "--quiet")
    assert code == 0 and err == ""
    assert out == loud and "| Shakespeare | 65 |" in out


def test_warnings_show_when_raised_one_line_each_whatever_their_category(
    cli, monkeypatch, tmp_path
):
    def command(args):
        warnings.warn("first", UserWarning, stacklevel=1)
        print("then a line of the command", file=sys.stderr)
        warnings.warn("a library's deprecation", DeprecationWarning, stacklevel=1)
        warnings.warn("two\nlines", RuntimeWarning, stacklevel=1)
        return 0

    monkeypatch.setattr(domaingpt.cli, "cmd_corpora", command)
    filters, show = list(warnings.filters), warnings.showwarning
    code, _, err = cli("corpora")
    assert code == 0
    assert err.splitlines() == [
        "warning: first",
        "then a line of the command",
        "warning: DeprecationWarning: a library's deprecation",
        f"warning: RuntimeWarning: {one_line('two' + chr(10) + 'lines')}",  # one line
    ]
    assert warnings.filters == filters and warnings.showwarning is show  # restored
