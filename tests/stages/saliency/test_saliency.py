"""Saliency: batched gradients equal per-prompt autograd, integrated gradients are
complete, aggregation by class and position is right on hand-made prompts, the deletion
test separates top-attributed from random characters on a trained model, the heatmap is
escaped, and the CLI refuses bad input in one line."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch
from tests.conftest import read_one, run_one

from domaingpt.cli import main
from domaingpt.context.prompts import (
    Prompt,
    PromptSet,
    build_prompt_set,
    user_prompt,
)
from domaingpt.context.rundir import RunDir
from domaingpt.context.stage import Results
from domaingpt.core import published
from domaingpt.core.claims import Verdict
from domaingpt.core.io import read_jsonl
from domaingpt.data.charclass import char_class
from domaingpt.data.vocab import Vocab
from domaingpt.errors import DomainGPTError
from domaingpt.model.checkpoint import (
    CheckpointMeta,
    find_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from domaingpt.model.gpt import GPT, GPTConfig
from domaingpt.stages.saliency import (
    GradientNorm,
    InputXGradient,
    IntegratedGradients,
    Occlusion,
    SaliencySettings,
    aggregate,
    claims,
    deletion_test,
    faithfulness_rows,
    long_frame,
    read_attributions,
    relative_positions,
    shares,
)
from domaingpt.stages.saliency import stage as saliency_stage
from domaingpt.stages.saliency.aggregate import per_character
from domaingpt.stages.saliency.faithfulness import deletion_tests
from domaingpt.stages.saliency.heatmap import HeatmapRow, render_heatmap
from domaingpt.stages.saliency.methods import (
    attribute_methods,
    attribute_prompts,
    baseline_log_p,
    target_log_prob,
)

VOCAB = Vocab.from_texts(
    ["abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ.,;!?\n0123456789+=é"]
)


pytestmark = pytest.mark.usefixtures("single_thread")


def tiny_model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    cfg = GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=24, vocab_size=VOCAB.size)
    return GPT(cfg).eval()


def prompt_set(*texts: str) -> PromptSet:
    return PromptSet([user_prompt(VOCAB, t, i, 24) for i, t in enumerate(texts)])


TEXTS = ("The cat sat on the mat.", "x = 1 + 2", "Hello\nworld!")
# The character classes in their order (and that of the hand-made prompt "Ab1 \n.+é").
CLASS_ORDER = "vowel consonant digit whitespace newline punctuation math_symbol other".split()  # noqa: SIM905


def reference_gradients(model: GPT, ps: PromptSet) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per prompt, unpadded, with plain autograd: (embeddings, d log p(target) / d e)."""
    out = []
    for p in ps.prompts:
        ids = torch.tensor(p.ids).unsqueeze(0)
        e = model.embed(ids).detach().requires_grad_(True)
        logits, _ = model(inputs_embeds=e)
        logp = torch.log_softmax(logits[0, -1], -1)[p.target_id]
        (g,) = torch.autograd.grad(logp, e)
        out.append((e.detach()[0], g[0]))
    return out


def test_batched_grad_norm_equals_per_prompt_autograd():
    model, ps = tiny_model(), prompt_set(*TEXTS)
    ids, lengths, targets, _ = ps.tensors()
    got = GradientNorm(model).attribute(ids, targets, lengths)
    for i, (_, g) in enumerate(reference_gradients(model, ps)):
        L = ps.prompts[i].length
        assert torch.allclose(got[i, :L], g.norm(dim=-1), atol=1e-6, rtol=1e-5)
        assert torch.all(got[i, L:] == 0)  # padding gets nothing
        assert got[i, :L].min() > 0


def test_input_x_gradient_equals_embedding_dot_gradient():
    model, ps = tiny_model(1), prompt_set(*TEXTS)
    ids, lengths, targets, _ = ps.tensors()
    got = InputXGradient(model).attribute(ids, targets, lengths)
    for i, (e, g) in enumerate(reference_gradients(model, ps)):
        L = ps.prompts[i].length
        assert torch.allclose(got[i, :L], (e * g).sum(-1), atol=1e-6, rtol=1e-5)


def test_integrated_gradients_completeness_on_random_model():
    model, ps = tiny_model(2), prompt_set(*TEXTS)
    ids, lengths, targets, _ = ps.tensors()
    ig = IntegratedGradients(model, n_steps=64)
    attr, delta = ig.attribute(ids, targets, lengths, return_convergence_delta=True)
    with torch.no_grad():
        for i, p in enumerate(ps.prompts):
            x = torch.tensor(p.ids).unsqueeze(0)
            e = model.embed(x)
            f_x = torch.log_softmax(model(inputs_embeds=e)[0][0, -1], -1)[p.target_id]
            f_0 = torch.log_softmax(model(inputs_embeds=0 * e)[0][0, -1], -1)[p.target_id]
            assert attr[i].sum().item() == pytest.approx((f_x - f_0).item(), abs=1e-3)
            assert abs(delta[i].item()) < 1e-3


@pytest.mark.parametrize("baseline", ["<unk>", " "])
def test_occlusion_equals_a_plain_loop_over_positions(baseline):
    model, ps = tiny_model(3), prompt_set(*TEXTS, "a b")
    ids, lengths, targets, _ = ps.tensors()
    replacement = VOCAB.id_of(baseline) if baseline != "<unk>" else 0
    got = Occlusion(model, replacement, batch_size=7).attribute(ids, targets, lengths)

    def log_p(x: np.ndarray, target: int) -> float:
        logits, _ = model(torch.tensor(x).unsqueeze(0))
        return torch.log_softmax(logits[0, -1], -1)[target].item()

    with torch.no_grad():
        for i, p in enumerate(ps.prompts):
            base = log_p(p.ids, p.target_id)
            for j in range(p.length):
                varied = p.ids.copy()
                varied[j] = replacement
                drop = base - log_p(varied, p.target_id)
                assert got[i, j].item() == pytest.approx(drop, abs=1e-5)
            assert torch.all(got[i, p.length :] == 0)  # padding gets nothing
    # a character that is the baseline already scores exactly 0
    spaces = ids == VOCAB.id_of(" ")
    if baseline == " ":
        assert torch.all(got[spaces] == 0)
    else:
        assert torch.all(got[spaces] != 0)


def test_methods_run_together_give_what_each_gives_alone():
    # grad_norm and input_x_grad share one gradient per batch, and log p(true) is read
    # from each method's own forward pass: the same numbers as each method on its own
    model, ps = tiny_model(4), prompt_set(*TEXTS, "a b")
    alone = [
        attribute_prompts(m, ps, batch_size=3)
        for m in (GradientNorm(model), InputXGradient(model), IntegratedGradients(model, 8))
    ]
    together = attribute_methods(
        [GradientNorm(model), InputXGradient(model), IntegratedGradients(model, 8)],
        ps,
        batch_size=3,
    )
    ids, lengths, targets, _ = ps.tensors()
    with torch.no_grad():
        log_p = target_log_prob(model, model.embed(ids), lengths, targets).double().numpy()
    for a, b in zip(alone, together, strict=True):
        assert np.array_equal(a.values, b.values) and np.array_equal(a.log_p, b.log_p)
        assert np.allclose(b.log_p, log_p, rtol=0, atol=1e-6)
    ig = together[2]
    assert np.array_equal(ig.f_0, baseline_log_p(model, ps, "cpu", 3))
    assert np.allclose(ig.values.sum(1) - (ig.log_p - ig.f_0), ig.delta, atol=1e-5)
    # a pair's rows of the whole set's attributions: what attributing the pair gives
    sub = ps.subset([1, 3])
    rows = together[0].rows([1, 3], sub.max_length)
    direct = attribute_prompts(GradientNorm(model), sub, batch_size=3)
    assert rows.values.shape == direct.values.shape == (2, len("x = 1 + "))
    assert np.allclose(rows.values, direct.values, rtol=1e-5, atol=1e-6)
    assert np.allclose(rows.log_p, direct.log_p, rtol=0, atol=1e-6)


def test_deletion_tests_of_several_methods_equal_one_at_a_time():
    model, ps = tiny_model(5), prompt_set(*TEXTS, "a b")
    ids, lengths, targets, _ = ps.tensors()
    scores = {
        "grad_norm": GradientNorm(model).attribute(ids, targets, lengths).numpy(),
        "input_x_grad": InputXGradient(model).attribute(ids, targets, lengths).numpy(),
    }
    together = deletion_tests(model, ps, scores, [1, 3], draws=4, seed=7, batch_size=2)
    assert sorted(together) == [(m, k) for m in sorted(scores) for k in (1, 3)]
    for (name, k), got in together.items():
        alone = deletion_test(model, ps, scores[name], k, draws=4, seed=7, batch_size=2)
        pd.testing.assert_frame_equal(got, alone)
    # the random deletions are the methods' common yardstick: the same draws for each
    for k in (1, 3):
        a, b = together[("grad_norm", k)], together[("input_x_grad", k)]
        assert np.array_equal(a["drop_random"], b["drop_random"])
        assert not np.array_equal(a["drop_top"], b["drop_top"])


def test_relative_positions_by_whitespace():
    text = "To be or no"
    labels = relative_positions(text)
    by = {
        lab: "".join(c for c, lab2 in zip(text, labels, strict=True) if lab2 == lab)
        for lab in set(labels)
    }
    assert by == {
        "current_word": "no",
        "boundary": " ",
        "previous_word": "or",
        "further_back": "To be ",
    }
    # ending in whitespace: the target starts a word, the last word is the previous one
    labels = relative_positions("the cat\n")
    assert labels == ["further_back"] * 4 + ["previous_word"] * 3 + ["boundary"]


def test_class_aggregation_on_a_hand_made_prompt():
    text = "Ab1 \n.+é"  # + the target "x"
    ps = PromptSet([user_prompt(VOCAB, text + "x", 0, 24)])
    values = np.array([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]])
    long = long_frame(values, ps, ["user"])
    assert list(long["char_class"]) == CLASS_ORDER
    assert list(long["char_class"]) == [char_class(c) for c in text]
    agg = aggregate(long, "char_class").set_index("char_class")
    assert agg.loc["digit", "mean_magnitude"] == 3.0
    assert agg.loc["other", "mean_share"] == pytest.approx(8 / 36)
    assert agg.loc["other", "lift"] == pytest.approx(8 * 8 / 36)
    assert agg["total_share"].sum() == pytest.approx(1.0)
    assert list(long["distance"]) == list(range(8, 0, -1))


def test_shares_sum_to_one_and_ignore_padding():
    values = np.array([[1.0, -3.0, 0.0], [2.0, 5.0, 9.0]])
    s = shares(values, np.array([3, 2]))
    assert s.sum(1).tolist() == pytest.approx([1.0, 1.0])
    assert s[0].tolist() == pytest.approx([0.25, 0.75, 0.0])
    assert s[1, 2] == 0.0


def test_heatmap_escapes_everything():
    row = HeatmapRow(
        label="<b>label</b>",
        text='<script>alert("x")</script>&',
        values=[0.1] * 28,
        target="<",
        group='"group"',
    )
    page = render_heatmap([row], title="<title>")
    assert "<script>" not in page
    flat = re.sub(r"</?span[^>]*>", "", page)  # the characters, one span each
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&lt;" in flat
    assert "<b>" not in page and "&amp;" in page
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page.lower()
    assert page.count('title="') == 28 + 1  # every character and the target hover
    assert "&quot;group&quot;" in page


@pytest.fixture(scope="module")
def trained(shakespeare_run, corpora):
    run = shakespeare_run.run
    models = run.model_entries()
    vocab = run.vocab()
    ps = build_prompt_set(
        run,
        models,
        vocab,
        per_corpus=32,
        length=32,
        corpora=[str(p) for p in corpora.paths],
        log=lambda m: None,
    )
    model = load_checkpoint(find_checkpoint(models[0].directory)).model
    return run, ps, model


def test_integrated_gradients_completeness_on_trained_model(trained):
    _, ps, model = trained
    ids, lengths, targets, _ = ps.subset(range(0, len(ps), 3)).tensors()
    ig = IntegratedGradients(model, n_steps=32, tolerance=0.01)
    _, delta = ig.attribute(ids, targets, lengths, return_convergence_delta=True)
    assert delta.abs().max() < 0.01
    assert int(ig.last_steps.min()) == 32  # most prompts need no refinement


def test_deletion_of_top_grad_norm_characters_hurts_more_than_random(trained):
    _, ps, model = trained
    ids, lengths, targets, _ = ps.tensors()
    scores = GradientNorm(model).attribute(ids, targets, lengths).numpy()
    drops = deletion_test(model, ps, scores, 3, draws=5, seed=0)
    row = faithfulness_rows(drops, {}, n_boot=500, seed=0)
    assert row["drop_top_mean"] > row["drop_random_mean"]
    assert row["verdict"] == "faithful" and row["diff_ci_low"] > 0


def test_run_saliency_end_to_end(trained, corpora, shakespeare_run):
    run, _, _ = trained
    settings = SaliencySettings(
        prompts_per_corpus=4,
        length=32,
        corpora=[str(p) for p in corpora.paths],
        checkpoints="all",
        ig_steps=16,
        deletion_k=[1, 3],
        deletion_draws=3,
        bootstrap=200,
        heatmap_prompts=1,
        device="cpu",
    )
    paths = run_one(saliency_stage, run, settings)
    tables = read_one(saliency_stage, run)
    bc = tables["by_checkpoint"]
    assert sorted(bc["iteration"].unique()) == shakespeare_run.checkpoints
    assert set(bc["method"]) == {"grad_norm", "input_x_grad", "integrated_gradients"}
    comp = tables["completeness"]
    assert (comp["max_abs_delta"] <= 0.01).all()
    assert set(tables["verdicts"]["method"]) == set(bc["method"])
    by_class = tables["by_class"]
    assert set(by_class["char_class"]) <= set(CLASS_ORDER)
    # zero- vs few-shot: the Math prompts through the Shakespeare model, before and after
    zf = tables["zero_few"]
    assert set(zf["stage"]) == {"zero_shot", "few_shot"} and set(zf["target"]) == {"math"}
    total = zf[zf["group_kind"] == "total"].set_index(["method", "stage"])
    assert total.loc[("grad_norm", "few_shot"), "checkpoint_iteration"] == 30
    assert total.loc[("grad_norm", "zero_shot"), "checkpoint_iteration"] == shakespeare_run.iters
    verdicts = {(c.claim, c.scope): c.verdict for c in claims(tables)}
    # with every checkpoint attributed, the training-dynamics claims get a verdict
    measured = (Verdict.HOLDS, Verdict.FAILS)
    assert verdicts[(published.GRADIENTS_SHRINK, "Shakespeare model")] in measured
    assert verdicts[(published.GRADIENTS_FOCUS, "Shakespeare model")] in measured
    assert verdicts[(published.VOWELS_TOP, "Shakespeare model")] in measured
    assert verdicts[(published.MATH_DIGITS, "Math model")] == Verdict.UNMEASURED
    page = paths["heatmap"].read_text(encoding="utf-8")
    assert page.count('class="row"') == 3 * 3  # 1 prompt per corpus x 3 methods
    for key in ("by_class_png", "by_relpos_png", "by_checkpoint_png", "faithfulness_png"):
        assert paths[key].stat().st_size > 5000
    # occlusion at every trained checkpoint (3 by default), with <unk> and with a space
    agree, per = tables["agreement"], tables["agreement_prompts"]
    assert set(agree["baseline"]) == {"unk", "space"}
    assert sorted(agree["iteration"].unique()) == shakespeare_run.checkpoints[1:]
    assert set(agree["method"]) == {"grad_norm", "input_x_grad", "integrated_gradients"}
    assert len(per) == 3 * 2 * 3 * 12 and per["spearman"].dropna().between(-1, 1).all()
    assert len(read_jsonl(run.root / "saliency" / "occlusion.jsonl")) == 3 * 2 * 12
    assert verdicts[(published.NORM_CAUTION, "grad_norm vs occlusion with <unk>")] in (
        Verdict.HOLDS,
        Verdict.PARTLY,
        Verdict.FAILS,
    )
    # zero- vs few-shot answered: no Math model in this run, so nothing to move towards
    zp = tables["zero_few_prompts"]
    assert len(zp) == 3 * 4 and zp["own_model"].isna().all()
    assert zp["rho_zero_few"].between(-1, 1).all() and zp["rho_few_own"].isna().all()
    assert verdicts[(published.ZERO_FEW_TOWARDS, "")] == Verdict.UNMEASURED
    assert set(tables["zero_few_classes"]["char_class"]) <= set(CLASS_ORDER)
    attributions = read_attributions(Results(saliency_stage, run))
    assert (
        len(attributions) == len(shakespeare_run.checkpoints) * 3 * 12
        and len(attributions["raw"].iloc[0]) == 32
    )


def test_cli_errors_are_one_line(tmp_path, capsys):
    code = main(["saliency", "--out", str(tmp_path / "r"), "--methods", "grad_nrom", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "unknown saliency method 'grad_nrom'" in err and "grad_norm" in err
    assert err.count("\n") == 1
    code = main(["saliency", "--out", str(tmp_path / "r"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: no trained models") and err.count("\n") == 1
    code = main(["saliency", "--out", str(tmp_path / "r"), "--prompt", "", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "prompt is empty" in err


def test_an_adapted_model_without_its_start_iteration_is_named(tmp_path):
    run = RunDir(tmp_path / "run")
    out = run.adapted / "shakespeare__to__math" / "final" / "seed0" / "checkpoints"
    save_checkpoint(
        out, "iter", 30, tiny_model(), VOCAB, CheckpointMeta(source_model="shakespeare")
    )
    (adapted,) = run.adapted_models()
    with pytest.raises(DomainGPTError) as e:
        run.adaptation_start(adapted, "saliency")
    message = str(e.value)
    assert "'source_iteration'" in message and "iter-" in message and "\n" not in message
    assert "domaingpt adapt" in message and "[saliency]" in message


def test_token_scores_are_spread_over_their_characters() -> None:
    """A subword prompt's scores per character: each token's score shared evenly by the
    characters it covers; a piece of a character (no character of its own) gives its
    score to the token that completes it."""
    tokens = Prompt(0, "verse", 0, "the cat🙂", " ", np.arange(4), 9, 0, np.array([3, 4, 0, 1]))
    chars = Prompt(1, "verse", 0, "ab", "c", np.arange(2), 3, 0)
    values = np.array([[0.9, -0.4, 0.25, 0.5], [1.0, 2.0, 0.0, 0.0]])
    got, lengths = per_character(values, PromptSet([tokens, chars]))
    assert list(lengths) == [8, 2]
    assert got[0].tolist() == pytest.approx([0.3] * 3 + [-0.1] * 4 + [0.75])
    assert got[1, :2].tolist() == [1.0, 2.0] and got[1, 2:].tolist() == [0.0] * 6
    assert [tokens.spans()[i] for i in range(4)] == [(0, 3), (3, 7), (7, 7), (7, 8)]
    # a character vocabulary's scores come back as they are
    same, n = per_character(values[1:, :2], PromptSet([chars]))
    assert same is values[1:, :2] or np.array_equal(same, values[1:, :2])
    assert list(n) == [2]
