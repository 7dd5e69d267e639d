"""The study's judgements of its samples, checked on the sample-quality tables.

Each check is a :class:`~domaingpt.core.claims.Claim` in the study's words (from
:mod:`domaingpt.core.published`); its evidence starts with what is measured, then the
scope and this run's numbers, and ``numbers`` holds the numbers that decide it. The
thresholds are settings of the stage, recorded in ``quality/settings.json`` (the
``settings`` table), so the verdicts are a function of what the stage wrote.

A verdict is "not measured" when the run cannot tell: a milestone the checkpoints are too
sparse to place, a run that stopped before the study's window ended, a pair of corpora
or an adaptation the run does not have.

Every claim also carries, as within-model detail, a Student-t 95 % interval over the
samples of the checkpoint(s) it reads (``quality.samples`` per checkpoint, 16 by
default; Welch's for a before/after or early/final difference), and an ``effect``: the
margin its verdict is decided on, signed so that a positive value supports it (zero at
its null): log-iterations inside the study's window for a milestone, nats inside its
loss range, corpus standard deviations inside the repetitiveness bounds, bits of JS
distance, shares. A claim made of several pairs at once carries the smallest margin;
a claim its run cannot measure carries none.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from domaingpt.context.stage import Tables
from domaingpt.core import published
from domaingpt.core.claims import Claim, holds_if, unmeasured
from domaingpt.core.statistics import mean_ci, welch_ci
from domaingpt.stages.quality.milestones import (
    adapt_groups,
    checkpoint_summary,
    milestones,
    model_histories,
    reference_value,
)
from domaingpt.stages.quality.settings import QualitySettings, thresholds
from domaingpt.stages.quality.textmetrics import REPETITION_METRICS

Numbers = dict[str, Any]


def claims(tables: Tables) -> list[Claim]:
    """The study's judgements of its samples, with the thresholds the stage ran with."""
    return quality_claims(tables, thresholds(tables))


def quality_claims(tables: Tables, settings: QualitySettings | None = None) -> list[Claim]:
    """The claims from the ``timeline``, ``reference`` and ``adapted`` tables: when
    spacing, words and word formation appear (iterations and loss), how the corpora
    compare, repetitiveness late in training, and what adaptation changed."""
    s = settings or QualitySettings()
    if "reference" not in tables:
        why = "no sample-quality tables (the quality stage has not run)"
        return [unmeasured(published.NOT_REPETITIVE, why), unmeasured(published.ADAPT_STYLE, why)]
    timeline = tables.get("timeline", pd.DataFrame())
    reference = tables["reference"]
    out: list[Claim] = []
    if not timeline.empty:
        summary = checkpoint_summary(timeline)
        events = milestones(summary, reference, s)
        out += _iteration_claims(events, reference, s, timeline)
        out += _relative_claims(events, timeline)
        out += _repetition_claims(summary, reference, s, timeline)
    else:
        out.append(
            _claim(
                published.NOT_REPETITIVE,
                "trained models",
                "repetitiveness of the samples of late checkpoints",
                None,
                "no samples along training in this run",
                {},
            )
        )
    out += _adapt_claims(tables.get("adapted", pd.DataFrame()), reference, s)
    return out


def _claim(
    claim: str,
    scope: str,
    measure: str,
    holds: bool | None,
    evidence: str,
    numbers: Numbers,
    effect: float | None = None,
) -> Claim:
    """One claim; its evidence says what is measured, then names its scope, so it reads
    on its own. A claim the run cannot measure (``holds`` None) carries no effect."""
    if holds is None or effect is None or not math.isfinite(effect):
        effect = None
    else:
        numbers = {**numbers, "effect": effect}
    return Claim(
        claim, holds_if(holds), f"{measure}. {scope}: {evidence}", scope, numbers, effect=effect
    )


# --- intervals over samples ---------------------------------------------------------------


def _values(frame: pd.DataFrame, column: str, **where: Any) -> pd.Series:
    """``frame[column]`` on the rows matching ``where`` (one value per sample)."""
    rows = frame
    for key, value in where.items():
        rows = rows[rows[key] == value]
    if column not in rows.columns:
        return pd.Series(dtype=float)
    return pd.to_numeric(rows[column], errors="coerce")


def _ci(values: pd.Series, fmt: str = ".3f") -> tuple[dict[str, float], str]:
    """The Student-t 95 % interval over the samples' finite values, and it in words."""
    ci = mean_ci(values.to_numpy(dtype=float))
    if ci["n"] == 0:
        return ci, "no sample"
    if ci["n"] < 2:
        return ci, f"{ci['mean']:{fmt}} (one sample: no interval)"
    return ci, (
        f"{ci['mean']:{fmt}} [{ci['ci_low']:{fmt}}, {ci['ci_high']:{fmt}}] over {ci['n']} samples"
    )


def _ci_numbers(prefix: str, ci: dict[str, float]) -> Numbers:
    return {
        f"{prefix}_mean": ci["mean"],
        f"{prefix}_ci_low": ci["ci_low"],
        f"{prefix}_ci_high": ci["ci_high"],
        f"{prefix}_n": ci["n"],
    }


def _diff(a: pd.Series, b: pd.Series) -> tuple[dict[str, float], str]:
    """Welch's 95 % interval of ``mean(a) - mean(b)`` over two sets of samples."""
    a, b = a.dropna().to_numpy(dtype=float), b.dropna().to_numpy(dtype=float)
    if len(a) < 2 or len(b) < 2:
        mean = float(a.mean() - b.mean()) if len(a) and len(b) else math.nan
        return {"mean": mean, "ci_low": math.nan, "ci_high": math.nan, "n": 0}, (
            f"{mean:+.3f} (too few samples for an interval)"
        )
    diff, lo, hi = welch_ci(a, b)
    return {"mean": diff, "ci_low": lo, "ci_high": hi, "n": len(a) + len(b)}, (
        f"{diff:+.3f} [{lo:+.3f}, {hi:+.3f}] ({len(a)} vs {len(b)} samples)"
    )


def _log_margin(value: float, low: float, high: float) -> float:
    """How far ``value`` lies inside ``[low, high]`` in natural-log units of iterations
    (negative outside); iteration 0 counts as 1."""
    v = math.log(max(value, 1.0))
    return min(v - math.log(max(low, 1e-9)), math.log(high) - v)


# --- formatting ------------------------------------------------------------------------


def _fmt_it(v: Any) -> str:
    return "—" if v is None else f"{int(v):,}"


def _fmt_loss(v: float | None) -> str:
    return "not reached" if v is None else f"{v:.3f}"


def _f(v: float) -> str:
    return "—" if v is None or math.isnan(v) else f"{v:.3f}"


def _pct(v: float) -> str:
    return "—" if v is None or math.isnan(v) else f"{100 * v:.1f}%"


def _range(lo: float, hi: float, fmt: str) -> str:
    return f"{lo:{fmt}}" if lo == hi else f"{lo:{fmt}}–{hi:{fmt}}"


# --- when: iterations and loss ------------------------------------------------------------


def _interval_verdict(
    observed: float | None, lo_end: float, hi_end: float, window: tuple[float, float]
) -> bool | None:
    """The event lies between ``lo_end`` and ``hi_end`` (first seen at ``observed``).
    True: seen inside ``window``; False: the whole interval is outside it; else None
    (the checkpoints are too sparse to tell)."""
    w_lo, w_hi = window
    if observed is not None and w_lo <= observed <= w_hi:
        return True
    if hi_end < w_lo or lo_end > w_hi:
        return False
    return None


def _iteration_claims(
    events: pd.DataFrame,
    reference: pd.DataFrame,
    s: QualitySettings,
    timeline: pd.DataFrame,
) -> list[Claim]:
    """The study's iteration and loss claims, per model whose corpus it made them for."""
    out = []
    for _, e in events.iterrows():
        coherent = e["event"] == "coherent"
        claim = (
            _loss_claim(e, s, timeline) if coherent else _milestone_claim(e, reference, s, timeline)
        )
        if claim is not None:
            out.append(claim)
    return out


def _event_numbers(e: pd.Series) -> Numbers:
    """The numbers a milestone's verdict rests on: where it was first reached and the
    checkpoint before (it happened in between), or how far the run got."""
    if pd.isna(e["iteration"]):
        return {
            "reached": 0,
            "last_iteration": int(e["last_iteration"]),
            "best_value": float(e["best_value"]),
        }
    has_prev = pd.notna(e["prev_iteration"])
    return {
        "reached": 1,
        "iteration": int(e["iteration"]),
        "value": float(e["value"]),
        "val_loss": float(e["val_loss"]),
        "prev_iteration": int(e["prev_iteration"]) if has_prev else None,
        "prev_value": float(e["prev_value"]) if has_prev else None,
        "prev_val_loss": float(e["prev_val_loss"]) if has_prev else None,
    }


def _at_checkpoint(
    timeline: pd.DataFrame, model: str, iteration: Any, column: str, label: str
) -> tuple[str, Numbers]:
    """The interval over one checkpoint's samples of ``column``, in words and numbers."""
    if iteration is None or pd.isna(iteration):
        return "", {}
    ci, text = _ci(_values(timeline, column, model=model, iteration=int(iteration)))
    return f"{label} at iteration {int(iteration):,}: {text}", _ci_numbers(column, ci)


def _milestone_claim(
    e: pd.Series, reference: pd.DataFrame, s: QualitySettings, timeline: pd.DataFrame
) -> Claim | None:
    """Spacing (:data:`published.SPACING`) or words (:data:`published.WORDS`): the first
    iteration the milestone is reached, inside the study's iterations widened by
    ``iteration_factor``. Effect: how far inside the widened window (log-iterations) the
    milestone was first seen; not reached, how far the run went past its end."""
    corpus, event = e["corpus"], e["event"]
    study = (published.SPACING if event == "spacing" else published.WORDS).get(corpus)
    if study is None:
        return None
    lo, hi, words = study
    f = s.iteration_factor
    window = (lo / f, hi * f)
    if event == "spacing":
        label = "space share"
        ref = reference_value(reference, corpus, "space_share")
        measure = (
            f"first iteration where the mean share of spaces is within "
            f"±{s.spacing_tolerance:.0%} of the corpus's ({ref:.3f}, held-out slices)"
        )
    else:
        label = "long words real"
        ref = reference_value(reference, corpus, "long_word_known")
        measure = (
            f"first iteration where ≥ {s.word_majority:.0%} of generated words of ≥ 4 "
            f"letters occur in the corpus (its own held-out text: {ref:.2f})"
        )
    has_prev = pd.notna(e["prev_iteration"])
    column = "space_share" if event == "spacing" else "long_word_known"
    if pd.isna(e["iteration"]):
        holds = _interval_verdict(None, e["last_iteration"] + 1, math.inf, window)
        evidence = (
            f"not reached by iteration {e['last_iteration']:,} (best {label} {e['best_value']:.3f})"
        )
        effect = math.log(window[1]) - math.log(e["last_iteration"] + 1)
        seen = e["last_iteration"]
    else:
        it = float(e["iteration"])
        since = float(e["prev_iteration"]) + 1 if has_prev else it
        holds = _interval_verdict(it, since, it, window)
        evidence = f"iteration {int(it):,} ({label} {e['value']:.3f})"
        if has_prev:
            evidence += f"; previous checkpoint {int(e['prev_iteration']):,}: {e['prev_value']:.3f}"
        effect = _log_margin(it, *window)
        seen = it
    evidence += f"; study: {_range(lo, hi, ',.0f')} (accepted {window[0]:,.0f}–{window[1]:,.0f})"
    text, ci_numbers = _at_checkpoint(timeline, e["model"], seen, column, label)
    if text:
        evidence += f"; {text}"
    if event == "spacing":
        evidence += (
            f" (corpus-like: {ref * (1 - s.spacing_tolerance):.3f}–"
            f"{ref * (1 + s.spacing_tolerance):.3f})"
        )
    numbers = {
        **_event_numbers(e),
        "corpus_value": ref,
        "study_low": lo,
        "study_high": hi,
        "accepted_low": window[0],
        "accepted_high": window[1],
        **ci_numbers,
    }
    return _claim(words, e["model"], measure, holds, evidence, numbers, effect)


def _loss_claim(e: pd.Series, s: QualitySettings, timeline: pd.DataFrame) -> Claim | None:
    """:data:`published.COHERENT_LOSS`: the val loss at which word formation first passes,
    inside the study's loss range widened by ``loss_tolerance``. Effect: how far inside
    that range (nats) the loss was; not reached, how far below its bottom the loss went."""
    study = published.COHERENT_LOSS.get(e["corpus"])
    if study is None:
        return None
    lo, hi, words = study
    window = (lo - s.loss_tolerance, hi + s.loss_tolerance)
    measure = (
        f"val loss at the first checkpoint where ≥ {s.coherent_words:.0%} of long words "
        "are real words"
    )
    if pd.isna(e["iteration"]):
        evidence = (
            f"not reached: best {e['best_value']:.2f} of long words real; lowest val loss "
            f"{e['lowest_val_loss']:.3f} (iteration {e['lowest_val_loss_iteration']:,})"
        )
        holds = False if e["lowest_val_loss"] < window[0] else None
        effect = float(e["lowest_val_loss"]) - window[0]
        seen = e["lowest_val_loss_iteration"]
    else:
        loss = float(e["val_loss"])
        has_prev = pd.notna(e["prev_iteration"])
        upper = float(e["prev_val_loss"]) if has_prev else math.inf
        evidence = (
            f"{e['value']:.2f} of long words real at iteration {int(e['iteration']):,}, "
            f"val loss {loss:.3f}"
        )
        if has_prev:
            evidence += f" (previous checkpoint: {e['prev_value']:.2f} at loss {upper:.3f})"
        holds = _interval_verdict(loss, loss, upper, window)
        effect = min(loss - window[0], window[1] - loss)
        seen = e["iteration"]
    evidence += f"; study: loss {_range(lo, hi, '.1f')} (accepted {window[0]:.2f}–{window[1]:.2f})"
    text, ci_numbers = _at_checkpoint(
        timeline, e["model"], seen, "long_word_known", "long words real"
    )
    if text:
        evidence += f"; {text}"
    numbers = {
        **_event_numbers(e),
        "lowest_val_loss": float(e["lowest_val_loss"]),
        "study_low": lo,
        "study_high": hi,
        "accepted_low": window[0],
        "accepted_high": window[1],
        **ci_numbers,
    }
    return _claim(words, e["model"], measure, holds, evidence, numbers, effect)


def _relative_claims(events: pd.DataFrame, timeline: pd.DataFrame) -> list[Claim]:
    """Math learns spacing later than Shakespeare; Wikipedia needs a lower loss."""
    first = {
        (r["corpus"], r["event"]): (None if pd.isna(r["iteration"]) else r)
        for _, r in events.iterrows()
    }
    corpora = set(events["corpus"])
    out = []
    if {"math", "shakespeare"} <= corpora:
        out.append(_math_spacing_claim(first, events, timeline))
    if "wikipedia" in corpora and {"shakespeare", "math"} & corpora:

        def loss(c: str) -> float | None:
            r = first[(c, "coherent")]
            return None if r is None else float(r["val_loss"])

        w = loss("wikipedia")
        others = {c: loss(c) for c in ("shakespeare", "math") if c in corpora}
        known = [v for v in others.values() if v is not None]
        holds = None if w is None or not known else all(w < v for v in known)
        # how much lower wikipedia's loss is than the lowest of the others' (nats)
        effect = None if w is None or not known else min(known) - w
        words, ci_numbers = [], {}
        for c in ("wikipedia", *others):
            r = first[(c, "coherent")]
            if r is not None:
                ci, text = _ci(
                    _values(timeline, "long_word_known", corpus=c, iteration=int(r["iteration"]))
                )
                words.append(f"{c} {text}")
                ci_numbers.update(_ci_numbers(f"{c}_long_word_known", ci))
        evidence = f"wikipedia: {_fmt_loss(w)}, " + ", ".join(
            f"{c}: {_fmt_loss(v)}" for c, v in others.items()
        )
        if words:
            evidence += "; long words real there: " + ", ".join(words)
        out.append(
            _claim(
                published.WIKI_LOSS,
                "wikipedia vs " + " and ".join(others),
                "val loss at which word formation passes: lower for wikipedia",
                holds,
                evidence,
                {
                    "wikipedia_val_loss": w,
                    **{f"{c}_val_loss": v for c, v in others.items()},
                    **ci_numbers,
                },
                effect,
            )
        )
    return out


def _math_spacing_claim(
    first: dict[tuple[str, str], Any], events: pd.DataFrame, timeline: pd.DataFrame
) -> Claim:
    """:data:`published.MATH_SPACING`: math reaches corpus-like spacing at a later
    checkpoint than shakespeare (the same checkpoint cannot order them). Effect: the log
    ratio of the two iterations (math never spaced: its last iteration + 1, a bound).
    Detail: both models' space share over their samples at shakespeare's iteration."""
    m, sh = first[("math", "spacing")], first[("shakespeare", "spacing")]
    mi = None if m is None else int(m["iteration"])
    si = None if sh is None else int(sh["iteration"])
    effect = None
    if si is None:
        holds = None
    elif mi is None:
        holds = True
        last = events.loc[events["corpus"] == "math", "last_iteration"]
        effect = math.log(int(last.iloc[0]) + 1) - math.log(max(si, 1)) if len(last) else None
    else:
        holds = None if mi == si else mi > si
        effect = math.log(max(mi, 1)) - math.log(max(si, 1))
    same = " (same checkpoint: too coarse to order)" if mi is not None and mi == si else ""
    evidence = f"math: {_fmt_it(mi)}, shakespeare: {_fmt_it(si)}" + same
    numbers: Numbers = {"math_iteration": mi, "shakespeare_iteration": si}
    if si is not None:
        shares = []
        for c in ("math", "shakespeare"):
            ci, text = _ci(_values(timeline, "space_share", corpus=c, iteration=si))
            shares.append(f"{c} {text}")
            numbers.update(_ci_numbers(f"{c}_space_share", ci))
        evidence += f"; space share at iteration {si:,}: " + ", ".join(shares)
    return _claim(
        published.MATH_SPACING,
        "math vs shakespeare",
        "first iteration with corpus-like spacing: later for math than for shakespeare",
        holds,
        evidence,
        numbers,
        effect,
    )


# --- repetitiveness -----------------------------------------------------------------------


def _repetition_claims(
    summary: pd.DataFrame,
    reference: pd.DataFrame,
    s: QualitySettings,
    timeline: pd.DataFrame,
) -> list[Claim]:
    """:data:`published.NOT_REPETITIVE`, per model: its late checkpoints are no more
    repetitive than its corpus's own text, and do not grow more repetitive."""
    return [
        _repetition_claim(model, g, reference, s, timeline) for model, g in model_histories(summary)
    ]


def _repetition_claim(
    model: str,
    g: pd.DataFrame,
    reference: pd.DataFrame,
    s: QualitySettings,
    timeline: pd.DataFrame,
) -> Claim:
    """Effect: the smaller of two margins in corpus standard deviations, both positive
    exactly when the claim holds: the least distance of a late checkpoint's mean inside
    its bound (corpus mean ± ``repeat_sigmas`` std), and the second-smallest over the
    measures of how far the last late checkpoint is from counting as "more repetitive"
    (two rising measures break the claim). Detail: each measure's interval over the
    last checkpoint's samples."""
    corpus = g["corpus"].iloc[0]
    last_it = int(g["iteration"].iloc[-1])
    late = g[g["iteration"] >= last_it / 2]
    numbers: Numbers = {"last_iteration": last_it}
    flagged, parts, inside = [], [], []
    for metric, direction in REPETITION_METRICS.items():
        mean = reference_value(reference, corpus, metric)
        std = reference_value(reference, corpus, metric, "slice_std")
        spread = s.repeat_sigmas * std
        bound = mean - spread if direction == "low" else mean + spread
        for _, r in late.iterrows():
            if (r[metric] < bound) if direction == "low" else (r[metric] > bound):
                flagged.append(f"{metric} {r[metric]:.3f} at iteration {int(r['iteration']):,}")
            gap = r[metric] - bound if direction == "low" else bound - r[metric]
            inside.append(gap / std if std > 0 else math.copysign(math.inf, gap))
        ci, text = _ci(_values(timeline, metric, model=model, iteration=last_it))
        parts.append(f"{metric} {text} (corpus {mean:.3f} ± {std:.3f})")
        numbers.update(
            {metric: g[metric].iloc[-1], f"{metric}_corpus": mean, f"{metric}_corpus_std": std}
        )
        numbers.update(_ci_numbers(metric, ci))
    rising = _rising(late, reference, corpus)
    margins = _rise_margins(late, reference, corpus)
    rise_margin = sorted(margins)[1] if len(margins) >= 2 else math.inf
    effect = min(min(inside, default=math.inf), rise_margin)
    evidence = f"at iteration {last_it:,}: " + ", ".join(parts)
    if flagged:
        evidence += "; more repetitive than the corpus: " + ", ".join(flagged)
    if len(late) >= 2:
        evidence += f"; from iteration {int(late['iteration'].iloc[0]):,} to {last_it:,}: " + (
            "more repetitive in " + ", ".join(rising) if rising else "no rise"
        )
    evidence += f" (the study trained 40,000+ iterations; measured up to {last_it:,})"
    measure = (
        f"late checkpoints (iteration ≥ {last_it // 2:,}) within {s.repeat_sigmas:g} std of "
        "the corpus's held-out slices in distinct 4-grams, zlib ratio and longest repeat, "
        "and not more repetitive than the corpus and than the first late checkpoint (by > "
        "one std) in two of them"
    )
    numbers.update(flagged=len(flagged), rising=len(rising))
    holds = not flagged and len(rising) < 2
    return _claim(
        published.NOT_REPETITIVE,
        model,
        measure,
        holds,
        evidence,
        numbers,
        effect if math.isfinite(effect) else None,
    )


def _rise_margins(late: pd.DataFrame, reference: pd.DataFrame, corpus: str) -> list[float]:
    """Per measure, how far (corpus std) the last late checkpoint is from "more
    repetitive" in :func:`_rising`'s sense: the larger of its room under a one-std rise
    and its room on the corpus's side of the mean (either keeps it from rising)."""
    if len(late) < 2:
        return []
    a, b = late.iloc[0], late.iloc[-1]
    out = []
    for metric, direction in REPETITION_METRICS.items():
        mean = reference_value(reference, corpus, metric)
        std = reference_value(reference, corpus, metric, "slice_std")
        if not std > 0:
            continue
        sign = -1.0 if direction == "low" else 1.0  # + : more repetitive
        rise = sign * (b[metric] - a[metric])
        beyond = sign * (b[metric] - mean)
        out.append(max((std - rise) / std, -beyond / std))
    return out


def _rising(late: pd.DataFrame, reference: pd.DataFrame, corpus: str) -> list[str]:
    """The measures more repetitive at the last late checkpoint than at the first by over
    one corpus std, and more repetitive than the corpus's own mean (random text becoming
    less random on its way to real text is not a rise)."""
    if len(late) < 2:
        return []
    a, b = late.iloc[0], late.iloc[-1]
    rising = []
    for metric, direction in REPETITION_METRICS.items():
        mean = reference_value(reference, corpus, metric)
        std = reference_value(reference, corpus, metric, "slice_std")
        delta = b[metric] - a[metric]
        if direction == "low":
            up = delta < -std and b[metric] < mean
        else:
            up = delta > std and b[metric] > mean
        if up:
            rising.append(f"{metric} {a[metric]:.3f} → {b[metric]:.3f}")
    return rising


# --- adaptation ---------------------------------------------------------------------------

ADAPT_CLAIMS = (published.ADAPT_STYLE, published.ADAPT_TONE, published.ADAPT_SYMBOLS)
TONE_MEASURE = (
    "speaker-heading lines after ≥ half of Shakespeare's share and above before; "
    "long words real after < {:.0%}"
)
SYMBOLS_MEASURE = (
    "share of math-symbol characters rises and ends nearer Math's share than Wikipedia's"
)
EARLY_MEASURE = (
    "share of the JS gap to the target closed: larger from the early checkpoint in most pairs"
)


def _adapt_claims(
    adapted: pd.DataFrame, reference: pd.DataFrame, s: QualitySettings
) -> list[Claim]:
    """What adaptation did to the samples' style, tone and symbols, and whether an early
    start adapts further (from the ``adapted`` table)."""
    groups = adapt_groups(adapted)
    if groups.empty:
        return [
            _claim(
                c,
                "adaptation",
                "adapted models' samples",
                None,
                "no adapted models in this run",
                {},
            )
            for c in (*ADAPT_CLAIMS, published.EARLY_SHIFT)
        ]
    trained = groups[groups["start"] != "scratch"]
    return [
        *_moved_claims(trained, reference, adapted),
        *_tone_claims(trained, reference, s, adapted),
        *_symbol_claims(trained, reference, adapted),
        _early_claim(trained, adapted),
    ]


def _phase(adapted: pd.DataFrame, g: Any, phase: str, column: str) -> pd.Series:
    """One (pair, start)'s per-sample ``column`` in ``phase`` (before / after); ``g`` has
    its ``source``, ``target`` and ``start`` (a row of :func:`adapt_groups`, a dict)."""
    return _values(
        adapted, column, source=g["source"], target=g["target"], start=g["start"], phase=phase
    )


def _moved_claims(
    trained: pd.DataFrame, reference: pd.DataFrame, adapted: pd.DataFrame
) -> list[Claim]:
    """:data:`published.ADAPT_STYLE`, one claim per start point over every pair: the
    samples' style distance to the target falls. Effect: the smallest fall (bits) over
    the pairs; detail: each fall's Welch interval over the before and after samples."""
    out = []
    for start, gs in trained.groupby("start", sort=True):
        moved, parts, numbers, falls = [], [], {}, []
        for _, g in gs.iterrows():
            b, a = g["js_target_before"], g["js_target_after"]
            if not (math.isnan(b) or math.isnan(a)):
                moved.append(bool(a < b))
                falls.append(b - a)
            ci, fall = _diff(
                _phase(adapted, g, "before", "js_unigram"),
                _phase(adapted, g, "after", "js_unigram"),
            )
            parts.append(
                f"{g['source']}→{g['target']} JS to target {_f(b)} → {_f(a)} "
                f"(fall {fall}; target's own text "
                f"{_f(reference_value(reference, g['target'], 'js_unigram'))}), "
                f"nearest the target {_pct(g['nearest_target_before'])} → "
                f"{_pct(g['nearest_target_after'])} of samples"
            )
            pair = f"{g['source']}__to__{g['target']}"
            numbers.update({f"{pair}_js_before": b, f"{pair}_js_after": a})
            numbers.update(
                {f"{pair}_fall_ci_low": ci["ci_low"], f"{pair}_fall_ci_high": ci["ci_high"]}
            )
        out.append(
            _claim(
                published.ADAPT_STYLE,
                f"every pair, start {start}",
                "JS distance (characters) of the samples to the target corpus falls from "
                "before to after adaptation, in every pair",
                all(moved) if moved else None,
                "; ".join(parts),
                numbers,
                min(falls) if falls else None,
            )
        )
    return out


def _tone_claims(
    trained: pd.DataFrame,
    reference: pd.DataFrame,
    s: QualitySettings,
    adapted: pd.DataFrame,
) -> list[Claim]:
    """:data:`published.ADAPT_TONE`, per (math or wikipedia → shakespeare, start): the
    play-like layout arrives but words stay poor. Effect: the smallest of its three
    margins (shares): headings after above half of Shakespeare's, above before, and long
    words real after below the coherence threshold. Detail: the after samples' intervals."""
    tone = trained[
        (trained["target"] == "shakespeare") & trained["source"].isin(["math", "wikipedia"])
    ]
    measure = TONE_MEASURE.format(s.coherent_words)
    if tone.empty:
        return [
            _claim(
                published.ADAPT_TONE,
                "math/wikipedia → shakespeare",
                measure,
                None,
                "no math or wikipedia model adapted to shakespeare in this run",
                {},
            )
        ]
    heading_ref = reference_value(reference, "shakespeare", "heading_share")
    out = []
    for _, g in tone.iterrows():
        hb, ha = g["heading_share_before"], g["heading_share_after"]
        words = g["long_word_known_after"]
        play = (not math.isnan(ha)) and ha >= 0.5 * heading_ref and (math.isnan(hb) or ha > hb)
        struggled = (not math.isnan(words)) and words < s.coherent_words
        holds = None if math.isnan(ha) or math.isnan(words) else bool(play and struggled)
        margins = [ha - 0.5 * heading_ref, s.coherent_words - words]
        if not math.isnan(hb):
            margins.append(ha - hb)
        heading_ci, heading_text = _ci(_phase(adapted, g, "after", "heading_share"))
        words_ci, words_text = _ci(_phase(adapted, g, "after", "long_word_known"))
        out.append(
            _claim(
                published.ADAPT_TONE,
                f"{g['source']} → shakespeare ({g['start']})",
                measure,
                holds,
                f"heading lines {_pct(hb)} → {_pct(ha)} (Shakespeare {_pct(heading_ref)}); "
                f"long words real after {_pct(words)}; after, per sample: heading share "
                f"{heading_text}, long words real {words_text}",
                {
                    "heading_share_before": hb,
                    "heading_share_after": ha,
                    "heading_share_corpus": heading_ref,
                    "long_word_known_after": words,
                    "coherent_words": s.coherent_words,
                    **_ci_numbers("heading_share_after", heading_ci),
                    **_ci_numbers("long_word_known_after", words_ci),
                },
                min(margins),
            )
        )
    return out


def _symbol_claims(
    trained: pd.DataFrame, reference: pd.DataFrame, adapted: pd.DataFrame
) -> list[Claim]:
    """:data:`published.ADAPT_SYMBOLS`, per (wikipedia → math, start). Effect: the smaller
    margin (share) of its two conditions, the rise and how much nearer Math's share than
    Wikipedia's it ends; detail: the rise's Welch interval over the samples."""
    sym = trained[(trained["source"] == "wikipedia") & (trained["target"] == "math")]
    if sym.empty:
        return [
            _claim(
                published.ADAPT_SYMBOLS,
                "wikipedia → math",
                SYMBOLS_MEASURE,
                None,
                "no wikipedia model adapted to math in this run",
                {},
            )
        ]
    ref_math = reference_value(reference, "math", "class_math_symbol")
    ref_wiki = reference_value(reference, "wikipedia", "class_math_symbol")
    out = []
    for _, g in sym.iterrows():
        before, after = g["math_symbol_before"], g["math_symbol_after"]
        holds = (
            None
            if math.isnan(after) or math.isnan(before)
            else bool(after > before and abs(after - ref_math) < abs(after - ref_wiki))
        )
        effect = min(after - before, abs(after - ref_wiki) - abs(after - ref_math))
        ci, rise = _diff(
            _phase(adapted, g, "after", "class_math_symbol"),
            _phase(adapted, g, "before", "class_math_symbol"),
        )
        out.append(
            _claim(
                published.ADAPT_SYMBOLS,
                f"wikipedia → math ({g['start']})",
                SYMBOLS_MEASURE,
                holds,
                f"math symbols {_pct(before)} → {_pct(after)} (rise {rise}; Math "
                f"{_pct(ref_math)}, Wikipedia {_pct(ref_wiki)})",
                {
                    "math_symbol_before": before,
                    "math_symbol_after": after,
                    "math_symbol_math": ref_math,
                    "math_symbol_wikipedia": ref_wiki,
                    "rise_ci_low": ci["ci_low"],
                    "rise_ci_high": ci["ci_high"],
                },
                effect,
            )
        )
    return out


def _gap_closed(adapted: pd.DataFrame, g: Any) -> pd.Series:
    """Per after-sample of one (pair, start), the share of the style gap it closed:
    (mean JS before − its JS) / mean JS before (the before mean taken as fixed)."""
    before = _phase(adapted, g, "before", "js_unigram").mean()
    after = _phase(adapted, g, "after", "js_unigram")
    return (before - after) / before if before else pd.Series(dtype=float)


def _early_claim(trained: pd.DataFrame, adapted: pd.DataFrame) -> Claim:
    """:data:`published.EARLY_SHIFT`: adaptation from an early checkpoint closes more of
    the style gap to the target than from the final one, in most pairs. Effect: the
    net share of pairs, (early larger − final larger) / pairs, the count the verdict is
    decided on; detail: per pair the Welch interval of early − final over the after
    samples' gap closed."""
    pivot = trained.pivot_table(index=["source", "target"], columns="start", values="gap_closed")
    early_cols = [c for c in pivot.columns if c != "final"]
    holds: bool | None = None
    effect: float | None = None
    numbers: Numbers = {}
    if "final" in pivot.columns and early_cols:
        early = pivot[early_cols].mean(axis=1)
        diff = (early - pivot["final"]).dropna()
        wins, losses = int((diff > 0).sum()), int((diff < 0).sum())
        holds = None if diff.empty or wins == losses else wins > losses
        effect = (wins - losses) / len(diff) if len(diff) else None
        parts = []
        for s_, t_ in diff.index:
            closed = {
                start: _gap_closed(adapted, {"source": s_, "target": t_, "start": start})
                for start in (*early_cols, "final")
            }
            early_samples = pd.concat([closed[c] for c in early_cols])
            ci, text = _diff(early_samples, closed["final"])
            parts.append(
                f"{s_}→{t_}: early {_pct(early[(s_, t_)])} vs final "
                f"{_pct(pivot['final'][(s_, t_)])} (early − final {text})"
            )
            numbers[f"{s_}__to__{t_}_early"] = float(early[(s_, t_)])
            numbers[f"{s_}__to__{t_}_final"] = float(pivot["final"][(s_, t_)])
            numbers[f"{s_}__to__{t_}_ci_low"] = ci["ci_low"]
            numbers[f"{s_}__to__{t_}_ci_high"] = ci["ci_high"]
        evidence = "; ".join(parts)
        numbers.update(early_larger=wins, final_larger=losses)
    else:
        evidence = "needs adaptation from both an early and the final checkpoint"
    return _claim(
        published.EARLY_SHIFT,
        "early vs final start",
        EARLY_MEASURE,
        holds,
        evidence,
        numbers,
        effect,
    )
