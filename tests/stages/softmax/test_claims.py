"""The probe stage's claims on small hand-made tables: for each claim a case where it
holds, one where it does not, and one the run cannot test."""

from __future__ import annotations

import pandas as pd
import pytest

from domaingpt.core import published
from domaingpt.core.claims import Claim, Verdict
from domaingpt.stages.softmax.claims import claims

HOLDS, FAILS, UNMEASURED = Verdict.HOLDS, Verdict.FAILS, Verdict.UNMEASURED


def summary(model: str, iters: list[int], entropy: list[float], p_true: list[float]):
    """In-domain summary rows of one model, one per checkpoint."""
    return pd.DataFrame(
        {
            "model": model,
            "iteration": iters,
            "domain": "in",
            "entropy_mean": entropy,
            "p_true_mean": p_true,
        }
    )


def last(
    model: str,
    corpus: str,
    iteration: int,
    e_in: list[float],
    e_out: list[float],
    out_corpus: str = "other",
):
    """Per-prompt rows at one checkpoint: entropy over every position, and at the last;
    the out-of-domain prompts come from ``out_corpus``."""
    domains = ["in"] * len(e_in) + ["out"] * len(e_out)
    return pd.DataFrame(
        {
            "model": model,
            "model_corpus": corpus,
            "iteration": iteration,
            "prompt_corpus": [corpus] * len(e_in) + [out_corpus] * len(e_out),
            "domain": domains,
            "entropy_all_bits": e_in + e_out,
            "entropy_bits": e_in + e_out,
        }
    )


def hard(model: str, reached: bool | None, hit: int | None, final: int):
    """One in-domain hardening row."""
    return {
        "model": model,
        "domain": "in",
        "epsilon": 0.05,
        "final_iteration": final,
        "last_js_bits": 0.01 if reached else 0.2,
        "hardening_iteration": pd.NA if hit is None else hit,
        "reached": reached,
    }


def over(model: str, chars: list[tuple[str, float]]):
    """Over-predicted characters of a model (char, excess), ranked as listed."""
    return pd.DataFrame(
        {
            "model": model,
            "rank": range(1, len(chars) + 1),
            "char": [c for c, _ in chars],
            "label": ["<space>" if c == " " else c for c, _ in chars],
            "mean_prob": [0.2 + e for _, e in chars],
            "corpus_freq": 0.2,
            "excess": [e for _, e in chars],
        }
    )


def tables(
    models: dict[str, str] | None = None,
    *,
    entropy: tuple[float, float] = (8.0, 4.0),
    p_true: tuple[float, float] = (0.01, 0.3),
    iters: tuple[int, ...] = (0, 1000),
    e_in: tuple[float, ...] = (3.0, 3.1, 2.9, 3.0),
    e_out: tuple[float, ...] = (5.0, 5.2, 4.8, 5.1),
    hardening: list[dict] | None = None,
    overpredicted: pd.DataFrame | None = None,
) -> dict[str, pd.DataFrame]:
    """A run with one model per corpus (``{model: corpus}``), alike unless told."""
    models = {"shakespeare": "shakespeare"} if models is None else models
    its = list(iters)
    ent = list(entropy) if len(its) == 2 else [entropy[0]] * len(its)
    pt = list(p_true) if len(its) == 2 else [p_true[0]] * len(its)
    final = its[-1]
    return {
        "summary": pd.concat([summary(m, its, ent, pt) for m in models], ignore_index=True),
        "last": pd.concat(
            [last(m, c, final, list(e_in), list(e_out)) for m, c in models.items()],
            ignore_index=True,
        ),
        "hardening": pd.DataFrame(
            hardening if hardening is not None else [hard(m, True, its[0], final) for m in models],
            columns=list(hard("m", True, 0, 0)),
        ),
        "overpredicted": overpredicted if overpredicted is not None else pd.DataFrame(),
    }


def claim(found: list[Claim], words: str, scope: str | None = None) -> Claim:
    """The one claim with these words (and scope)."""
    hits = [c for c in found if c.claim == words and (scope is None or c.scope == scope)]
    assert len(hits) == 1, [(c.claim, c.scope) for c in found]
    return hits[0]


def test_every_claim_is_in_the_studys_words_with_a_verdict_and_a_scope():
    found = claims(tables({"math": "math", "shakespeare": "shakespeare", "wiki": "wikipedia"}))
    assert len(found) == 3 * 3 + 3 + 2 + 1
    words = {
        published.ENTROPY_FALLS,
        published.P_TRUE_RISES,
        published.OOD_ENTROPY,
        published.MATH_SPACE,
        *published.HARDENING_BY_CORPUS.values(),
        *(w for _, _, w in published.HARDENING_ORDER),
    }
    assert {c.claim for c in found} == words
    assert all(c.scope and c.evidence for c in found)
    assert {c.scope for c in found if c.claim == published.OOD_ENTROPY} == {
        "math model, other prompts",
        "shakespeare model, other prompts",
        "wiki model, other prompts",
    }
    assert not any(c.per_model for c in found)
    order = [c for c in found if c.claim == published.HARDENING_ORDER[1][2]]
    assert order[0].scope == "shakespeare and wiki models"


# --- entropy falls, p(true) rises ---------------------------------------------------------


def test_entropy_falls_and_p_true_rises():
    found = claims(tables(entropy=(8.0, 4.0), p_true=(0.01, 0.3)))
    falls = claim(found, published.ENTROPY_FALLS)
    assert falls.verdict is HOLDS and falls.scope == "shakespeare model"
    assert falls.numbers["entropy_first_bits"] == 8.0
    assert falls.numbers["entropy_final_bits"] == 4.0
    assert falls.numbers["steps_fallen"] == 1 and falls.numbers["final_iteration"] == 1000
    assert falls.effect == pytest.approx(4.0) == falls.numbers["entropy_fall_bits"]
    rises = claim(found, published.P_TRUE_RISES)
    assert rises.verdict is HOLDS and rises.numbers["p_true_final"] == 0.3
    assert rises.effect == pytest.approx(0.29) == rises.numbers["p_true_rise"]


def test_entropy_that_rises_and_p_true_that_falls_do_not_hold():
    found = claims(tables(entropy=(4.0, 4.5), p_true=(0.3, 0.2)))
    falls, rises = claim(found, published.ENTROPY_FALLS), claim(found, published.P_TRUE_RISES)
    assert falls.verdict is FAILS and falls.effect == pytest.approx(-0.5)
    assert rises.verdict is FAILS and rises.effect == pytest.approx(-0.1)


@pytest.mark.parametrize(
    ("domain", "iters", "why"),
    [("in", (1000,), "fewer than two checkpoints"), ("out", (0, 1000), "no in-domain prompts")],
)
def test_entropy_and_p_true_need_two_in_domain_checkpoints(domain, iters, why):
    t = tables(iters=iters)
    t["summary"]["domain"] = domain
    found = claims(t)
    for words in (published.ENTROPY_FALLS, published.P_TRUE_RISES):
        c = claim(found, words)
        assert c.verdict is UNMEASURED and c.evidence == why and c.numbers == {}


# --- out-of-domain entropy -----------------------------------------------------------------


def test_out_of_domain_entropy_higher_holds_when_the_interval_is_above_zero():
    c = claim(
        claims(tables(e_in=(3.0, 3.1, 2.9, 3.0), e_out=(5.0, 5.2, 4.8, 5.1))), published.OOD_ENTROPY
    )
    assert c.verdict is HOLDS and c.scope == "shakespeare model, other prompts"
    assert c.numbers["difference_bits"] == pytest.approx(5.025 - 3.0) == c.effect
    assert c.numbers["ci95_low"] > 0 and c.numbers["n_out"] == 4 and c.numbers["iteration"] == 1000


def test_out_of_domain_entropy_lower_does_not_hold():
    c = claim(
        claims(tables(e_in=(5.0, 5.2, 4.8, 5.1), e_out=(3.0, 3.1, 2.9, 3.0))), published.OOD_ENTROPY
    )
    assert c.verdict is FAILS and c.numbers["ci95_high"] < 0
    assert c.effect == pytest.approx(-(5.025 - 3.0))


IN = (3.0, 3.1, 2.9, 3.0)


def two_corpora(math_out: tuple[float, ...], wiki_out: tuple[float, ...]) -> dict:
    """The shakespeare model read on its own prompts and on math and wikipedia ones."""
    t = tables()
    t["last"] = pd.concat(
        [
            last("shakespeare", "shakespeare", 1000, list(IN), list(math_out), "math"),
            last("shakespeare", "shakespeare", 1000, [], list(wiki_out), "wikipedia"),
        ],
        ignore_index=True,
    )
    return claims(t)


def test_out_of_domain_entropy_is_claimed_per_prompt_corpus_and_pooled_where_they_agree():
    found = two_corpora(math_out=(3.5, 3.6, 3.4, 3.5), wiki_out=(5.0, 5.2, 4.8, 5.1))
    math = claim(found, published.OOD_ENTROPY, "shakespeare model, math prompts")
    wiki = claim(found, published.OOD_ENTROPY, "shakespeare model, wikipedia prompts")
    pooled = claim(found, published.OOD_ENTROPY, "shakespeare model, all out-of-domain prompts")
    assert math.verdict is wiki.verdict is pooled.verdict is HOLDS
    assert math.effect == pytest.approx(0.5) and wiki.effect == pytest.approx(2.025)
    assert math.numbers["n_out"] == wiki.numbers["n_out"] == 4
    # the pooled line: every out-of-domain prompt, its effect the smaller corpus's gap
    assert pooled.numbers["n_out"] == 8 and pooled.numbers["corpora_agree"] == "yes"
    assert pooled.numbers["difference_bits"] == pytest.approx((3.5 + 5.025) / 2 - 3.0)
    assert pooled.effect == pytest.approx(0.5) == pooled.numbers["smallest_corpus_effect"]


def test_opposite_corpora_give_opposite_verdicts_and_no_pooled_holds():
    """Math prompts well above the in-domain entropy, Wikipedia prompts a little below:
    pooled, the gap is positive and its interval above zero, which hid the reversal."""
    found = two_corpora(math_out=(5.0, 5.2, 4.8, 5.1) * 2, wiki_out=(2.8, 2.9, 2.7, 2.8))
    math = claim(found, published.OOD_ENTROPY, "shakespeare model, math prompts")
    wiki = claim(found, published.OOD_ENTROPY, "shakespeare model, wikipedia prompts")
    assert math.verdict is HOLDS and math.effect > 0
    assert wiki.verdict is FAILS and wiki.effect == pytest.approx(-0.2)
    pooled = claim(found, published.OOD_ENTROPY, "shakespeare model, all out-of-domain prompts")
    assert pooled.numbers["ci95_low"] > 0  # what the pooled interval alone would say
    assert pooled.verdict is Verdict.PARTLY and pooled.numbers["corpora_agree"] == "no"
    assert pooled.effect == pytest.approx(-0.2)
    assert pooled.evidence.startswith("not pooled: the prompt corpora point in opposite")
    assert "Math prompts +2.025 [holds]" in pooled.evidence
    assert "Wikipedia prompts -0.200 [does not hold]" in pooled.evidence


@pytest.mark.parametrize(
    ("e_out", "why"),
    [((2.0, 4.0, 3.0, 3.1), "95% CI"), ((5.0,), "needs in- and out-of-domain prompts")],
)
def test_out_of_domain_entropy_is_not_measured_when_undecided_or_without_prompts(e_out, why):
    c = claim(claims(tables(e_out=e_out)), published.OOD_ENTROPY)
    assert c.verdict is UNMEASURED and why in c.evidence
    # an undecided interval still has its estimate; no prompts, none
    assert (c.effect is None) == (len(e_out) == 1)


# --- where each model hardens ------------------------------------------------------------


@pytest.mark.parametrize(
    ("corpus", "reached", "hit", "final", "verdict", "effect"),
    [
        # "Math ... at around 1000 iterations": by 1000 holds, after it or never fails;
        # the effect is 1000 minus the hardening iteration (never: the final one)
        ("math", True, 500, 2000, HOLDS, 500),
        ("math", True, 1500, 2000, FAILS, -500),
        ("math", False, None, 2000, FAILS, -1000),
        # "Shakespeare ... after roughly 4000 iterations"
        ("shakespeare", True, 4000, 5000, HOLDS, 0),
        ("shakespeare", True, 4500, 5000, FAILS, -500),
        # "Wikipedia ... still displayed variability even after 14,000 iterations": the
        # effect is the hardening iteration minus 14000
        ("wikipedia", False, None, 20000, HOLDS, 6000),
        ("wikipedia", True, 15000, 20000, HOLDS, 1000),
        ("wikipedia", True, 10000, 20000, FAILS, -4000),
        # the run ends before the study's iteration: whatever it saw, it cannot tell
        ("math", True, 250, 300, UNMEASURED, None),
        ("math", False, None, 300, UNMEASURED, None),
        ("wikipedia", True, 250, 300, UNMEASURED, None),
        ("wikipedia", False, None, 300, UNMEASURED, None),
        # a single checkpoint: hardening is undefined
        ("shakespeare", None, None, 5000, UNMEASURED, None),
    ],
)
def test_hardening_against_the_studys_iteration(corpus, reached, hit, final, verdict, effect):
    t = tables({corpus: corpus}, iters=(0, final), hardening=[hard(corpus, reached, hit, final)])
    c = claim(claims(t), published.HARDENING_BY_CORPUS[corpus])
    bound = published.HARDENING[corpus][0]
    assert c.verdict is verdict and c.scope == f"{corpus} model"
    assert c.numbers["study_iteration"] == bound and c.numbers["final_iteration"] == final
    assert c.numbers["hardening_iteration"] == (hit if reached else None)
    assert ("the run ends before" in c.evidence) == (final < bound)
    assert c.effect == effect and c.numbers["margin_iterations"] == effect


def test_hardening_without_the_model_is_not_measured():
    c = claim(claims(tables({"shakespeare": "shakespeare"})), published.HARDENING_BY_CORPUS["math"])
    assert c.verdict is UNMEASURED and c.evidence == "no math model in this run"
    assert c.scope == "math model" and c.numbers == {}


MATH_FIRST = published.HARDENING_ORDER[0][2]


@pytest.mark.parametrize(
    ("math_hit", "shakespeare_hit", "verdict", "effect"),
    [
        # the effect: shakespeare's hardening iteration minus math's (never: the final one)
        (500, 3000, HOLDS, 2500),
        (500, None, HOLDS, 4500),  # never hardening counts as later than any iteration
        (3000, 500, FAILS, -2500),
        (500, 500, FAILS, 0),
        (None, 500, FAILS, -4500),
        (None, None, UNMEASURED, None),
    ],
)
def test_math_hardens_before_shakespeare(math_hit, shakespeare_hit, verdict, effect):
    rows = [
        hard("m", math_hit is not None, math_hit, 5000),
        hard("s", shakespeare_hit is not None, shakespeare_hit, 5000),
    ]
    t = tables({"m": "math", "s": "shakespeare"}, iters=(0, 5000), hardening=rows)
    c = claim(claims(t), MATH_FIRST)
    assert c.verdict is verdict and c.scope == "m and s models"
    assert c.numbers == {
        "math_hardening_iteration": math_hit,
        "shakespeare_hardening_iteration": shakespeare_hit,
        "gap_iterations": effect,
    }
    assert c.effect == effect


def test_hardening_order_needs_both_models():
    c = claim(claims(tables({"s": "shakespeare"})), MATH_FIRST)
    assert c.verdict is UNMEASURED and c.evidence == "needs both a math and a shakespeare model"
    assert c.scope == "math and s models"


def test_shakespeare_hardens_before_wikipedia():
    rows = [hard("s", True, 2000, 20000), hard("w", False, None, 20000)]
    t = tables({"s": "shakespeare", "w": "wikipedia"}, iters=(0, 20000), hardening=rows)
    c = claim(claims(t), published.HARDENING_ORDER[1][2])
    assert (
        c.verdict is HOLDS and c.evidence == "shakespeare: iteration 2000, wikipedia: not reached"
    )


# --- the math model's <space> ---------------------------------------------------------------


def test_math_model_over_predicts_space():
    o = over("math", [("$", 0.05), (" ", 0.04), ("\\", 0.01)])
    c = claim(claims(tables({"math": "math"}, overpredicted=o)), published.MATH_SPACE)
    assert c.verdict is HOLDS and c.scope == "math model"
    assert c.numbers["space_rank"] == 2 and c.numbers["space_excess"] == 0.04
    assert "top 3: $ +0.050, <space> +0.040, \\ +0.010" in c.evidence
    # fewer than three other characters listed: the margin is the excess itself
    assert c.effect == pytest.approx(0.04)
    o = over("math", [("$", 0.05), (" ", 0.04), ("\\", 0.03), ("{", 0.01)])
    c = claim(claims(tables({"math": "math"}, overpredicted=o)), published.MATH_SPACE)
    # above zero by 0.04, above the third other character ({ +0.01) by 0.03
    assert c.verdict is HOLDS and c.effect == pytest.approx(0.03) == c.numbers["space_margin"]


@pytest.mark.parametrize(
    ("chars", "rank", "effect"),
    [
        # rank 4: 0.02 below the third of the other characters
        ([("$", 0.05), ("{", 0.04), ("\\", 0.03), (" ", 0.01)], 4, -0.02),
        # not listed: its excess is at most the lowest listed (0.02), 0.01 below the third
        ([("$", 0.05), ("{", 0.04), ("\\", 0.03), ("a", 0.02)], None, -0.01),
        # not listed, two characters listed: no third to measure against
        ([("$", 0.05), ("{", 0.04)], None, None),
    ],
)
def test_math_model_space_below_the_top_three_does_not_hold(chars, rank, effect):
    c = claim(
        claims(tables({"math": "math"}, overpredicted=over("math", chars))), published.MATH_SPACE
    )
    assert c.verdict is FAILS and c.numbers["space_rank"] == rank
    assert c.effect == (None if effect is None else pytest.approx(effect))


@pytest.mark.parametrize("models", [{"shakespeare": "shakespeare"}, {"math": "math"}])
def test_math_space_without_a_math_model_or_out_of_domain_prompts_is_not_measured(models):
    o = over("shakespeare", [(" ", 0.2)]) if "shakespeare" in models else pd.DataFrame()
    c = claim(claims(tables(models, overpredicted=o)), published.MATH_SPACE)
    assert c.verdict is UNMEASURED and c.evidence == "no math model or no out-of-domain prompts"
