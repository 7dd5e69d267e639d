"""The probe stage's claims on small hand-made tables: for each claim a case where it
holds, one where it does not, and one the run cannot test."""

from __future__ import annotations

import pandas as pd
import pytest

from domaingpt.core import published
from domaingpt.core.claims import Claim, Verdict
from domaingpt.stages.probe.claims import claims

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


def last(model: str, corpus: str, iteration: int, e_in: list[float], e_out: list[float]):
    """Per-prompt rows at one checkpoint: entropy over every position, and at the last."""
    domains = ["in"] * len(e_in) + ["out"] * len(e_out)
    return pd.DataFrame(
        {
            "model": model,
            "model_corpus": corpus,
            "iteration": iteration,
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
        "math model",
        "shakespeare model",
        "wiki model",
    }
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
    rises = claim(found, published.P_TRUE_RISES)
    assert rises.verdict is HOLDS and rises.numbers["p_true_final"] == 0.3


def test_entropy_that_rises_and_p_true_that_falls_do_not_hold():
    found = claims(tables(entropy=(4.0, 4.5), p_true=(0.3, 0.2)))
    assert claim(found, published.ENTROPY_FALLS).verdict is FAILS
    assert claim(found, published.P_TRUE_RISES).verdict is FAILS


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
    assert c.verdict is HOLDS
    assert c.numbers["difference_bits"] == pytest.approx(5.025 - 3.0)
    assert c.numbers["ci95_low"] > 0 and c.numbers["n_out"] == 4 and c.numbers["iteration"] == 1000


def test_out_of_domain_entropy_lower_does_not_hold():
    c = claim(
        claims(tables(e_in=(5.0, 5.2, 4.8, 5.1), e_out=(3.0, 3.1, 2.9, 3.0))), published.OOD_ENTROPY
    )
    assert c.verdict is FAILS and c.numbers["ci95_high"] < 0


@pytest.mark.parametrize(
    ("e_out", "why"),
    [((2.0, 4.0, 3.0, 3.1), "95% CI"), ((5.0,), "needs in- and out-of-domain prompts")],
)
def test_out_of_domain_entropy_is_not_measured_when_undecided_or_without_prompts(e_out, why):
    c = claim(claims(tables(e_out=e_out)), published.OOD_ENTROPY)
    assert c.verdict is UNMEASURED and why in c.evidence


# --- where each model hardens ------------------------------------------------------------


@pytest.mark.parametrize(
    ("corpus", "reached", "hit", "final", "verdict"),
    [
        # "Math ... at around 1000 iterations": by 1000 holds, after it or never fails
        ("math", True, 500, 2000, HOLDS),
        ("math", True, 1500, 2000, FAILS),
        ("math", False, None, 2000, FAILS),
        # "Shakespeare ... after roughly 4000 iterations"
        ("shakespeare", True, 4000, 5000, HOLDS),
        ("shakespeare", True, 4500, 5000, FAILS),
        # "Wikipedia ... still displayed variability even after 14,000 iterations"
        ("wikipedia", False, None, 20000, HOLDS),
        ("wikipedia", True, 15000, 20000, HOLDS),
        ("wikipedia", True, 10000, 20000, FAILS),
        # the run ends before the study's iteration: whatever it saw, it cannot tell
        ("math", True, 250, 300, UNMEASURED),
        ("math", False, None, 300, UNMEASURED),
        ("wikipedia", True, 250, 300, UNMEASURED),
        ("wikipedia", False, None, 300, UNMEASURED),
        # a single checkpoint: hardening is undefined
        ("shakespeare", None, None, 5000, UNMEASURED),
    ],
)
def test_hardening_against_the_studys_iteration(corpus, reached, hit, final, verdict):
    t = tables({corpus: corpus}, iters=(0, final), hardening=[hard(corpus, reached, hit, final)])
    c = claim(claims(t), published.HARDENING_BY_CORPUS[corpus])
    bound = published.HARDENING[corpus][0]
    assert c.verdict is verdict and c.scope == f"{corpus} model"
    assert c.numbers["study_iteration"] == bound and c.numbers["final_iteration"] == final
    assert c.numbers["hardening_iteration"] == (hit if reached else None)
    assert ("the run ends before" in c.evidence) == (final < bound)


def test_hardening_without_the_model_is_not_measured():
    c = claim(claims(tables({"shakespeare": "shakespeare"})), published.HARDENING_BY_CORPUS["math"])
    assert c.verdict is UNMEASURED and c.evidence == "no math model in this run"
    assert c.scope == "math model" and c.numbers == {}


MATH_FIRST = published.HARDENING_ORDER[0][2]


@pytest.mark.parametrize(
    ("math_hit", "shakespeare_hit", "verdict"),
    [
        (500, 3000, HOLDS),
        (500, None, HOLDS),  # never hardening counts as later than any iteration
        (3000, 500, FAILS),
        (500, 500, FAILS),
        (None, 500, FAILS),
        (None, None, UNMEASURED),
    ],
)
def test_math_hardens_before_shakespeare(math_hit, shakespeare_hit, verdict):
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
    }


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


@pytest.mark.parametrize(
    "chars",
    [
        [("$", 0.05), ("{", 0.04), ("\\", 0.03), (" ", 0.01)],  # rank 4
        [("$", 0.05), ("{", 0.04)],  # not listed
    ],
)
def test_math_model_space_below_the_top_three_does_not_hold(chars):
    c = claim(
        claims(tables({"math": "math"}, overpredicted=over("math", chars))), published.MATH_SPACE
    )
    assert c.verdict is FAILS
    assert c.numbers["space_rank"] == (4 if len(chars) == 4 else None)


@pytest.mark.parametrize("models", [{"shakespeare": "shakespeare"}, {"math": "math"}])
def test_math_space_without_a_math_model_or_out_of_domain_prompts_is_not_measured(models):
    o = over("shakespeare", [(" ", 0.2)]) if "shakespeare" in models else pd.DataFrame()
    c = claim(claims(tables(models, overpredicted=o)), published.MATH_SPACE)
    assert c.verdict is UNMEASURED and c.evidence == "no math model or no out-of-domain prompts"
