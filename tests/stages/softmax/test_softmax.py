"""Softmax inspection: exact values on hand-made models and tables, and on a model
trained briefly on real Shakespeare: in-domain entropy is lower than out-of-domain."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from tests.conftest import read_one, run_one

from domaingpt.cli import main
from domaingpt.context.prompts import PromptSet, user_prompt
from domaingpt.core import published
from domaingpt.core.claims import Verdict, read_claims
from domaingpt.core.statistics import js_divergence_bits
from domaingpt.data.vocab import Vocab
from domaingpt.model.gpt import GPT, GPTConfig
from domaingpt.stages.softmax import stage as softmax_stage
from domaingpt.stages.softmax.claims import claims
from domaingpt.stages.softmax.compute import next_char_stats
from domaingpt.stages.softmax.hardening import hardening
from domaingpt.stages.softmax.settings import SoftmaxSettings

VOCAB = Vocab.from_texts(["abcdefghijklmnopqrstuvwxyz .,\n"])


pytestmark = pytest.mark.usefixtures("single_thread")


def tiny_model(block: int = 16) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=block, vocab_size=VOCAB.size))


def test_uniform_distribution_has_log2_v_bits():
    model = tiny_model()
    with torch.no_grad():
        model.head.weight.zero_()  # tied to the embedding: logits are 0 everywhere
    ps = PromptSet([user_prompt(VOCAB, "hello world", 0, 16), user_prompt(VOCAB, "ab", 1, 16)])
    stats = next_char_stats(model, ps)
    V = VOCAB.size
    valid = ~np.isnan(stats.entropy)
    assert valid.sum() == 10 + 1  # padding is NaN
    assert np.allclose(stats.entropy[valid], math.log2(V), atol=1e-9)
    assert np.allclose(stats.p_true[valid], 1.0 / V)
    assert np.all(stats.rank[valid] == 1)  # ties count in the true character's favour
    assert np.allclose(stats.last_probs, 1.0 / V)


def test_entropy_ptrue_and_rank_match_a_direct_computation():
    model = tiny_model().eval()
    ps = PromptSet([user_prompt(VOCAB, "the cat sat.", 0, 16)])
    stats = next_char_stats(model, ps)
    ids, _, _, nxt = ps.tensors()
    with torch.no_grad():
        p = torch.softmax(model(ids)[0][0].double(), -1)
    H = -(p * torch.log2(p)).sum(-1)
    pt = p[torch.arange(ids.shape[1]), nxt[0]]
    assert np.allclose(stats.entropy[0], H.numpy())
    assert np.allclose(stats.p_true[0], pt.numpy())
    assert stats.rank[0, -1] == 1 + int((p[-1] > pt[-1]).sum())


def test_js_divergence_bounds():
    p = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    q = np.array([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0]])
    assert js_divergence_bits(p, q).tolist() == pytest.approx([0.0, 1.0])
    r = np.array([[0.25, 0.75, 0.0]])
    m = (p[:1] + r) / 2
    expected = (
        0.5 * (p[0, :2] * np.log2(p[0, :2] / m[0, :2])).sum()
        + 0.5 * (r[0, :2] * np.log2(r[0, :2] / m[0, :2])).sum()
    )
    assert js_divergence_bits(p[:1], r)[0] == pytest.approx(expected)


def _summary(model: str, iters: list[int], p_true: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"model": model, "domain": "in", "iteration": iters, "p_true_mean": p_true})


def test_hardening_iteration_reached_and_not_reached():
    iters = [0, 10, 25, 50, 100]
    js = pd.DataFrame(
        {
            "model": ["a"] * 4 + ["b"] * 4,
            "domain": "in",
            "iteration": iters[1:] * 2,
            "js_bits": [0.4, 0.2, 0.03, 0.01, 0.4, 0.01, 0.02, 0.2],
        }
    )
    summary = pd.concat(
        [_summary("a", iters, [0.0, 0.3, 0.5, 0.52, 0.53]), _summary("b", iters, [0.1] * 5)]
    )
    h = hardening(js, summary, epsilon=0.05, delta=0.05).set_index("model")
    # a: the last pair at or above 0.05 ends at 25; from 25 on every step is below.
    assert h.loc["a", "hardening_iteration"] == 25 and h.loc["a", "reached"]
    assert h.loc["a", "p_true_settled_iteration"] == 25  # within 0.05 of 0.53 from 25 on
    # b: the last step (50 -> 100) still moves by 0.2 bits.
    assert pd.isna(h.loc["b", "hardening_iteration"]) and not h.loc["b", "reached"]
    assert h.loc["b", "p_true_settled_iteration"] == 0


@pytest.fixture(scope="module")
def probed(shakespeare_run, corpora):
    run = shakespeare_run.run
    settings = SoftmaxSettings(
        prompts_per_corpus=24,
        length=32,
        corpora=[str(p) for p in corpora.paths],
        prompts=["To be, or not to be"],
        device="cpu",
    )
    paths = run_one(softmax_stage, run, settings)
    return run, paths, read_one(softmax_stage, run), shakespeare_run


def test_probe_writes_every_table_and_figure(probed):
    _, paths, tables, trained = probed
    for key in ("last", "topk", "positions", "summary", "js", "hardening"):
        assert paths[key].stat().st_size > 0
    for key in ("entropy_png", "p_true_png", "entropy_positions_png", "topk_shakespeare_png"):
        assert paths[key].stat().st_size > 5000
    last = tables["last"]
    assert sorted(last["iteration"].unique()) == trained.checkpoints
    assert set(last["domain"]) == {"in", "out", "user"}
    assert len(last) == len(trained.checkpoints) * (3 * 24 + 1)
    pos = tables["positions"]
    assert sorted(pos["position"].unique()) == list(range(32))


def test_topk_is_sorted_and_agrees_with_rank(probed):
    _, _, tables, _trained = probed
    topk, last = tables["topk"], tables["last"]
    for (_, _), g in topk.groupby(["iteration", "prompt_id"]):
        probs = g.sort_values("k")["prob"].to_numpy()
        assert np.all(np.diff(probs) <= 1e-12) and probs.sum() <= 1 + 1e-9
    merged = last.merge(topk[topk["k"] == 1], on=["model", "iteration", "prompt_id"])
    assert ((merged["rank"] == 1) == merged["is_target"]).all()
    first = merged.iloc[0]
    assert first["p_true"] <= first["prob"] + 1e-12


def test_in_domain_entropy_is_lower_than_out_of_domain(probed):
    _, _, tables, trained = probed
    s = tables["summary"].set_index(["iteration", "domain"])
    # averaged over every position of a prompt (one number per prompt, then over prompts)
    assert (
        s.loc[(trained.iters, "in"), "entropy_all_mean"]
        < s.loc[(trained.iters, "out"), "entropy_all_mean"]
    )
    last = tables["last"]
    final = (
        last[last["iteration"] == trained.iters].groupby("prompt_corpus")["entropy_all_bits"].mean()
    )
    assert final["shakespeare"] < min(final["math"], final["wikipedia"])
    # the untrained model is nearly uniform: log2(V) bits whatever the prompt
    V = len(Vocab.from_json(__import__("json").loads(probed[0].vocab_path.read_text())))
    assert s.loc[(0, "in"), "entropy_mean"] == pytest.approx(math.log2(V), abs=0.05)
    assert s.loc[(trained.iters, "in"), "p_true_mean"] > 5 * s.loc[(0, "in"), "p_true_mean"]


def test_claims_hold_from_the_numbers(probed):
    _, _, tables, _trained = probed
    by = {(c.claim, c.scope): c for c in claims(tables)}
    assert by[(published.ENTROPY_FALLS, "shakespeare model")].verdict is Verdict.HOLDS
    ood = by[(published.OOD_ENTROPY, "shakespeare model, all out-of-domain prompts")]
    assert ood.verdict is Verdict.HOLDS and "bits" in ood.evidence
    assert ood.numbers["ci95_low"] > 0 and ood.numbers["n_out"] == 48
    for corpus in ("math", "wikipedia"):  # and once per prompt corpus, each its own way
        one = by[(published.OOD_ENTROPY, f"shakespeare model, {corpus} prompts")]
        assert one.verdict is Verdict.HOLDS and one.numbers["n_out"] == 24 and one.effect > 0
    assert ood.numbers["corpora_agree"] == "yes" and ood.effect > 0
    # no math model: untestable, said so, not guessed
    math_hardens = by[(published.HARDENING_BY_CORPUS["math"], "math model")]
    assert math_hardens.verdict is Verdict.UNMEASURED and "no math model" in math_hardens.evidence


def test_cli_prints_hardening_then_the_claims(shakespeare_run, corpora, tmp_path, cli):
    root = shutil.copytree(shakespeare_run.run.root, tmp_path / "run")
    two = f"{corpora.path('shakespeare')},{corpora.path('math')}"
    code, out, _ = cli(
        "probe",
        *("--out", root, "--corpora", two, "--prompts-per-corpus", 3),
        *("--length", 16, "--device", "cpu", "--offline", "--quiet"),
    )
    assert code == 0
    lines = out.splitlines()
    hard = read_one(softmax_stage, root)["hardening"].set_index("domain")
    for line, (domain, words) in zip(
        lines[:2], (("in", "in-domain"), ("out", "out-of-domain")), strict=True
    ):
        it = hard.loc[domain, "hardening_iteration"]
        when = "not reached" if pd.isna(it) else f"iteration {it}"
        assert line == f"hardening shakespeare ({words}): {when} (of 300)"
    written = read_claims(root / "softmax" / "claims.csv")
    assert len(written) == 9 and written[0].claim == published.ENTROPY_FALLS
    assert lines[2:] == [c.line() for c in written]


def test_overpredicted_characters_use_the_prompt_corpus_frequency(probed):
    _, _, tables, _trained = probed
    over = tables["overpredicted"]
    assert len(over) == 10 and (over["model"] == "shakespeare").all()
    assert np.allclose(over["excess"], over["mean_prob"] - over["corpus_freq"])
    assert over["excess"].is_monotonic_decreasing and over["excess"].iloc[0] > 0


def test_cli_errors_are_one_line(tmp_path, capsys):
    code = main(["probe", "--out", str(tmp_path / "empty"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: no trained models") and err.count("\n") == 1
    code = main(["probe", "--out", str(tmp_path / "empty"), "--prompt", "", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "prompt is empty" in err and err.count("\n") == 1
