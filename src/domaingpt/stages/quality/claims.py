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
from domaingpt.core.claims import Claim, holds_if, smallest_effect, unmeasured
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
        check = _Check(
            published.NOT_REPETITIVE,
            "trained models",
            "repetitiveness of the samples of late checkpoints",
        )
        out.append(check.unmeasured("no samples along training in this run"))
    out += _adapt_claims(tables.get("adapted", pd.DataFrame()), reference, s)
    return out


class _Check:
    """One claim being checked on one scope.

    The study's statement (from :mod:`domaingpt.core.published`), the scope and what is
    measured are fixed when the check starts; the evidence and ``numbers`` grow as the
    claim's rows are read (an interval records its own numbers), and :meth:`decide`
    makes the claim. Its evidence says what is measured, then names its scope, so it
    reads on its own: "<measure>. <scope>: <this run's numbers>".
    """

    def __init__(
        self, statement: str, scope: str, measure: str, numbers: Numbers | None = None
    ) -> None:
        self.statement, self.scope, self.measure = statement, scope, measure
        self.evidence = ""
        self.numbers: Numbers = dict(numbers or {})

    def note(self, text: str, sep: str = "; ", **numbers: Any) -> None:
        """``text`` added to the evidence (after ``sep``), ``numbers`` to the numbers."""
        if text:
            self.evidence = f"{self.evidence}{sep}{text}" if self.evidence else text
        self.numbers.update(numbers)

    def interval(self, name: str, values: pd.Series) -> str:
        """The Student-t 95 % interval over the samples' ``values``, in words; its mean,
        ends and count recorded as ``<name>_mean``, ``_ci_low``, ``_ci_high``, ``_n``."""
        ci, text = _ci(values)
        self.numbers.update({f"{name}_{k}": ci[k] for k in ("mean", "ci_low", "ci_high", "n")})
        return text

    def difference(self, name: str, a: pd.Series, b: pd.Series) -> str:
        """Welch's 95 % interval of ``mean(a) - mean(b)`` over two sets of samples, in
        words; its ends recorded as ``<name>_ci_low`` and ``<name>_ci_high``."""
        ci, text = _diff(a, b)
        self.numbers.update({f"{name}_ci_low": ci["ci_low"], f"{name}_ci_high": ci["ci_high"]})
        return text

    def decide(self, holds: bool | None, effect: float | None = None) -> Claim:
        """The claim: holds, does not hold, or (``holds`` None) not measured, which
        carries no effect; a finite effect is also recorded as ``numbers["effect"]``."""
        numbers = self.numbers
        if holds is None or effect is None or not math.isfinite(effect):
            effect = None
        else:
            numbers = {**numbers, "effect": effect}
        evidence = f"{self.measure}. {self.scope}: {self.evidence}"
        return Claim(self.statement, holds_if(holds), evidence, self.scope, numbers, effect=effect)

    def unmeasured(self, why: str) -> Claim:
        """The claim, not measured for the reason ``why``."""
        self.note(why)
        return self.decide(None)


# --- intervals over samples ---------------------------------------------------------------


def _values(frame: pd.DataFrame, column: str, **where: Any) -> pd.Series:
    """``frame[column]`` on the rows matching ``where`` (one value per sample)."""
    rows = frame
    for key, value in where.items():
        rows = rows[rows[key] == value]
    if column not in rows.columns:
        return pd.Series(dtype=float)
    return pd.to_numeric(rows[column], errors="coerce")


def _ci(values: pd.Series) -> tuple[dict[str, float], str]:
    """The Student-t 95 % interval over the samples' finite values, and it in words."""
    ci = mean_ci(values.to_numpy(dtype=float))
    if ci["n"] == 0:
        return ci, "no sample"
    if ci["n"] < 2:
        return ci, f"{ci['mean']:.3f} (one sample: no interval)"
    return ci, f"{ci['mean']:.3f} [{ci['ci_low']:.3f}, {ci['ci_high']:.3f}] over {ci['n']} samples"


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


def _window_numbers(lo: float, hi: float, window: tuple[float, float]) -> Numbers:
    """The study's range and the range accepted around it (widened by a setting)."""
    return {
        "study_low": lo,
        "study_high": hi,
        "accepted_low": window[0],
        "accepted_high": window[1],
    }


def _at_checkpoint(
    check: _Check, timeline: pd.DataFrame, model: str, iteration: Any, column: str, label: str
) -> None:
    """The interval over one checkpoint's samples of ``column``, added to ``check``."""
    if iteration is None or pd.isna(iteration):
        return
    text = check.interval(column, _values(timeline, column, model=model, iteration=int(iteration)))
    check.note(f"{label} at iteration {int(iteration):,}: {text}")


def _milestone_claim(
    e: pd.Series, reference: pd.DataFrame, s: QualitySettings, timeline: pd.DataFrame
) -> Claim | None:
    """Spacing (:data:`published.SPACING`) or words (:data:`published.WORDS`): the first
    iteration the milestone is reached, inside the study's iterations widened by
    ``iteration_factor``. Effect: how far inside the widened window (log-iterations) the
    milestone was first seen; not reached, how far the run went past its end."""
    corpus, spacing = e["corpus"], e["event"] == "spacing"
    study = (published.SPACING if spacing else published.WORDS).get(corpus)
    if study is None:
        return None
    lo, hi, words = study
    window = (lo / s.iteration_factor, hi * s.iteration_factor)
    column = "space_share" if spacing else "long_word_known"
    label = "space share" if spacing else "long words real"
    ref = reference_value(reference, corpus, column)
    if spacing:
        measure = (
            f"first iteration where the mean share of spaces is within "
            f"±{s.spacing_tolerance:.0%} of the corpus's ({ref:.3f}, held-out slices)"
        )
    else:
        measure = (
            f"first iteration where ≥ {s.word_majority:.0%} of generated words of ≥ 4 "
            f"letters occur in the corpus (its own held-out text: {ref:.2f})"
        )
    check = _Check(words, e["model"], measure, {**_event_numbers(e), "corpus_value": ref})
    if pd.isna(e["iteration"]):
        seen = e["last_iteration"]
        holds = _interval_verdict(None, seen + 1, math.inf, window)
        effect = math.log(window[1]) - math.log(seen + 1)
        check.note(f"not reached by iteration {seen:,} (best {label} {e['best_value']:.3f})")
    else:
        seen = float(e["iteration"])
        has_prev = pd.notna(e["prev_iteration"])
        since = float(e["prev_iteration"]) + 1 if has_prev else seen
        holds = _interval_verdict(seen, since, seen, window)
        effect = _log_margin(seen, *window)
        check.note(f"iteration {int(seen):,} ({label} {e['value']:.3f})")
        if has_prev:
            check.note(f"previous checkpoint {int(e['prev_iteration']):,}: {e['prev_value']:.3f}")
    check.note(
        f"study: {_range(lo, hi, ',.0f')} (accepted {window[0]:,.0f}–{window[1]:,.0f})",
        **_window_numbers(lo, hi, window),
    )
    _at_checkpoint(check, timeline, e["model"], seen, column, label)
    if spacing:
        tolerance = s.spacing_tolerance
        check.note(
            f"(corpus-like: {ref * (1 - tolerance):.3f}–{ref * (1 + tolerance):.3f})", sep=" "
        )
    return check.decide(holds, effect)


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
    numbers = {**_event_numbers(e), "lowest_val_loss": float(e["lowest_val_loss"])}
    check = _Check(words, e["model"], measure, numbers)
    if pd.isna(e["iteration"]):
        check.note(
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
        check.note(
            f"{e['value']:.2f} of long words real at iteration {int(e['iteration']):,}, "
            f"val loss {loss:.3f}"
        )
        if has_prev:
            check.note(f"(previous checkpoint: {e['prev_value']:.2f} at loss {upper:.3f})", sep=" ")
        holds = _interval_verdict(loss, loss, upper, window)
        effect = min(loss - window[0], window[1] - loss)
        seen = e["iteration"]
    check.note(
        f"study: loss {_range(lo, hi, '.1f')} (accepted {window[0]:.2f}–{window[1]:.2f})",
        **_window_numbers(lo, hi, window),
    )
    _at_checkpoint(check, timeline, e["model"], seen, "long_word_known", "long words real")
    return check.decide(holds, effect)


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
        out.append(_wiki_loss_claim(first, corpora, timeline))
    return out


def _wiki_loss_claim(
    first: dict[tuple[str, str], Any], corpora: set[str], timeline: pd.DataFrame
) -> Claim:
    """:data:`published.WIKI_LOSS`: wikipedia's words form at a lower val loss than those
    of the other corpora of the run. Effect: how much lower (nats) than the lowest of the
    others'. Detail: the long words real over each model's samples at that checkpoint."""

    def loss(c: str) -> float | None:
        r = first[(c, "coherent")]
        return None if r is None else float(r["val_loss"])

    w = loss("wikipedia")
    others = {c: loss(c) for c in ("shakespeare", "math") if c in corpora}
    known = [v for v in others.values() if v is not None]
    holds = None if w is None or not known else all(w < v for v in known)
    effect = None if w is None or not known else min(known) - w
    check = _Check(
        published.WIKI_LOSS,
        "wikipedia vs " + " and ".join(others),
        "val loss at which word formation passes: lower for wikipedia",
        {"wikipedia_val_loss": w, **{f"{c}_val_loss": v for c, v in others.items()}},
    )
    check.note(
        f"wikipedia: {_fmt_loss(w)}, "
        + ", ".join(f"{c}: {_fmt_loss(v)}" for c, v in others.items())
    )
    words = []
    for c in ("wikipedia", *others):
        r = first[(c, "coherent")]
        if r is not None:
            rows = _values(timeline, "long_word_known", corpus=c, iteration=int(r["iteration"]))
            words.append(f"{c} {check.interval(f'{c}_long_word_known', rows)}")
    if words:
        check.note("long words real there: " + ", ".join(words))
    return check.decide(holds, effect)


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
    check = _Check(
        published.MATH_SPACING,
        "math vs shakespeare",
        "first iteration with corpus-like spacing: later for math than for shakespeare",
        {"math_iteration": mi, "shakespeare_iteration": si},
    )
    same = " (same checkpoint: too coarse to order)" if mi is not None and mi == si else ""
    check.note(f"math: {_fmt_it(mi)}, shakespeare: {_fmt_it(si)}" + same)
    if si is not None:
        shares = [
            f"{c} "
            + check.interval(
                f"{c}_space_share", _values(timeline, "space_share", corpus=c, iteration=si)
            )
            for c in ("math", "shakespeare")
        ]
        check.note(f"space share at iteration {si:,}: " + ", ".join(shares))
    return check.decide(holds, effect)


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
    measure = (
        f"late checkpoints (iteration ≥ {last_it // 2:,}) within {s.repeat_sigmas:g} std of "
        "the corpus's held-out slices in distinct 4-grams, zlib ratio and longest repeat, "
        "and not more repetitive than the corpus and than the first late checkpoint (by > "
        "one std) in two of them"
    )
    check = _Check(published.NOT_REPETITIVE, model, measure, {"last_iteration": last_it})
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
        check.numbers.update(
            {metric: g[metric].iloc[-1], f"{metric}_corpus": mean, f"{metric}_corpus_std": std}
        )
        text = check.interval(metric, _values(timeline, metric, model=model, iteration=last_it))
        parts.append(f"{metric} {text} (corpus {mean:.3f} ± {std:.3f})")
    rising, margins = _rises(late, reference, corpus)
    check.note(f"at iteration {last_it:,}: " + ", ".join(parts))
    if flagged:
        check.note("more repetitive than the corpus: " + ", ".join(flagged))
    if len(late) >= 2:
        check.note(
            f"from iteration {int(late['iteration'].iloc[0]):,} to {last_it:,}: "
            + ("more repetitive in " + ", ".join(rising) if rising else "no rise")
        )
    check.note(
        f"(the study trained 40,000+ iterations; measured up to {last_it:,})",
        sep=" ",
        flagged=len(flagged),
        rising=len(rising),
    )
    rise_margin = sorted(margins)[1] if len(margins) >= 2 else math.inf
    effect = min(min(inside, default=math.inf), rise_margin)
    return check.decide(not flagged and len(rising) < 2, effect)


def _rises(
    late: pd.DataFrame, reference: pd.DataFrame, corpus: str
) -> tuple[list[str], list[float]]:
    """From the first late checkpoint to the last: the measures that became more
    repetitive by over one corpus std and are more repetitive than the corpus's own mean
    (random text becoming less random on its way to real text is not a rise), and per
    measure with a spread, how far (corpus std) the last checkpoint is from such a rise:
    the larger of its room under a one-std rise and its room on the corpus's side of the
    mean (either keeps it from rising)."""
    if len(late) < 2:
        return [], []
    a, b = late.iloc[0], late.iloc[-1]
    rising, margins = [], []
    for metric, direction in REPETITION_METRICS.items():
        mean = reference_value(reference, corpus, metric)
        std = reference_value(reference, corpus, metric, "slice_std")
        sign = -1.0 if direction == "low" else 1.0  # + : more repetitive
        rise = sign * (b[metric] - a[metric])
        beyond = sign * (b[metric] - mean)
        if rise > std and beyond > 0:
            rising.append(f"{metric} {a[metric]:.3f} → {b[metric]:.3f}")
        if std > 0:
            margins.append(max((std - rise) / std, -beyond / std))
    return rising, margins


# --- adaptation ---------------------------------------------------------------------------

ADAPT_CLAIMS = (published.ADAPT_STYLE, published.ADAPT_TONE, published.ADAPT_SYMBOLS)
MOVED_MEASURE = (
    "JS distance (characters) of the samples to the target corpus falls from before to "
    "after adaptation, in every pair"
)
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
            _Check(c, "adaptation", "adapted models' samples").unmeasured(
                "no adapted models in this run"
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
        check = _Check(published.ADAPT_STYLE, f"every pair, start {start}", MOVED_MEASURE)
        moved, falls = [], []
        for _, g in gs.iterrows():
            b, a = g["js_target_before"], g["js_target_after"]
            if not (math.isnan(b) or math.isnan(a)):
                moved.append(bool(a < b))
                falls.append(b - a)
            pair = f"{g['source']}__to__{g['target']}"
            check.numbers.update({f"{pair}_js_before": b, f"{pair}_js_after": a})
            fall = check.difference(
                f"{pair}_fall",
                _phase(adapted, g, "before", "js_unigram"),
                _phase(adapted, g, "after", "js_unigram"),
            )
            check.note(
                f"{g['source']}→{g['target']} JS to target {_f(b)} → {_f(a)} "
                f"(fall {fall}; target's own text "
                f"{_f(reference_value(reference, g['target'], 'js_unigram'))}), "
                f"nearest the target {_pct(g['nearest_target_before'])} → "
                f"{_pct(g['nearest_target_after'])} of samples"
            )
        out.append(check.decide(all(moved) if moved else None, smallest_effect(falls)))
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
            _Check(published.ADAPT_TONE, "math/wikipedia → shakespeare", measure).unmeasured(
                "no math or wikipedia model adapted to shakespeare in this run"
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
        check = _Check(
            published.ADAPT_TONE,
            f"{g['source']} → shakespeare ({g['start']})",
            measure,
            {
                "heading_share_before": hb,
                "heading_share_after": ha,
                "heading_share_corpus": heading_ref,
                "long_word_known_after": words,
                "coherent_words": s.coherent_words,
            },
        )
        heading = check.interval(
            "heading_share_after", _phase(adapted, g, "after", "heading_share")
        )
        known = check.interval(
            "long_word_known_after", _phase(adapted, g, "after", "long_word_known")
        )
        check.note(
            f"heading lines {_pct(hb)} → {_pct(ha)} (Shakespeare {_pct(heading_ref)}); "
            f"long words real after {_pct(words)}; after, per sample: heading share "
            f"{heading}, long words real {known}"
        )
        out.append(check.decide(holds, min(margins)))
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
            _Check(published.ADAPT_SYMBOLS, "wikipedia → math", SYMBOLS_MEASURE).unmeasured(
                "no wikipedia model adapted to math in this run"
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
        check = _Check(
            published.ADAPT_SYMBOLS,
            f"wikipedia → math ({g['start']})",
            SYMBOLS_MEASURE,
            {
                "math_symbol_before": before,
                "math_symbol_after": after,
                "math_symbol_math": ref_math,
                "math_symbol_wikipedia": ref_wiki,
            },
        )
        rise = check.difference(
            "rise",
            _phase(adapted, g, "after", "class_math_symbol"),
            _phase(adapted, g, "before", "class_math_symbol"),
        )
        check.note(
            f"math symbols {_pct(before)} → {_pct(after)} (rise {rise}; Math "
            f"{_pct(ref_math)}, Wikipedia {_pct(ref_wiki)})"
        )
        out.append(check.decide(holds, effect))
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
    check = _Check(published.EARLY_SHIFT, "early vs final start", EARLY_MEASURE)
    pivot = trained.pivot_table(index=["source", "target"], columns="start", values="gap_closed")
    early_cols = [c for c in pivot.columns if c != "final"]
    if "final" not in pivot.columns or not early_cols:
        return check.unmeasured("needs adaptation from both an early and the final checkpoint")
    early = pivot[early_cols].mean(axis=1)
    final = pivot["final"]
    diff = (early - final).dropna()
    wins, losses = int((diff > 0).sum()), int((diff < 0).sum())
    for s_, t_ in diff.index:
        closed = {
            start: _gap_closed(adapted, {"source": s_, "target": t_, "start": start})
            for start in (*early_cols, "final")
        }
        pair = f"{s_}__to__{t_}"
        check.numbers.update(
            {f"{pair}_early": float(early[(s_, t_)]), f"{pair}_final": float(final[(s_, t_)])}
        )
        text = check.difference(pair, pd.concat([closed[c] for c in early_cols]), closed["final"])
        check.note(
            f"{s_}→{t_}: early {_pct(early[(s_, t_)])} vs final "
            f"{_pct(final[(s_, t_)])} (early − final {text})"
        )
    check.numbers.update(early_larger=wins, final_larger=losses)
    holds = None if diff.empty or wins == losses else wins > losses
    return check.decide(holds, (wins - losses) / len(diff) if len(diff) else None)
