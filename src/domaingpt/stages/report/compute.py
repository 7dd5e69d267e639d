"""The report's sections, built from every stage's view: the summary first, the overview
of the run, each stage's own section (or a note saying why it is missing) and the
conclusions, every claim with its verdict (Holm-adjusted over the whole report)."""

from __future__ import annotations

from contextlib import suppress
from pathlib import Path

import pandas as pd

from domaingpt.context.rundir import RunDir
from domaingpt.context.stage import Stage, StageView, stage_view
from domaingpt.core.claims import VERDICTS, Claim, claims_frame, display
from domaingpt.core.inference import adjust
from domaingpt.core.io import read_json
from domaingpt.data.tokenizer import AnyVocab, is_subword
from domaingpt.errors import DomainGPTError
from domaingpt.report.document import Section
from domaingpt.stages.report.summary import summary_section


def corpus_names(run: RunDir) -> list[str]:
    spec = read_json(run.root / "study.json") if (run.root / "study.json").is_file() else {}
    names = [
        Path(c).stem if ("/" in c or "\\" in c or c.endswith(".txt")) else c
        for c in spec.get("corpora", [])
    ]
    return names or run.trained_models()


def _model_vocabs(run: RunDir) -> dict[str, AnyVocab]:
    """The vocabulary each trained model reads (a model whose checkpoints cannot be read
    is left out: its sections say so)."""
    out = {}
    for name in run.trained_models():
        with suppress(DomainGPTError, OSError, ValueError):
            out[name] = run.model_vocab(name)
    return out


def _tokens_paragraph(vocabs: dict[str, AnyVocab]) -> str | None:
    """What the report says at its top when some models read tokens, not characters."""
    subword = {name: v for name, v in vocabs.items() if is_subword(v)}
    if not subword:
        return None
    sizes = ", ".join(sorted({f"{v.size:,}" for v in subword.values()}))
    if len(subword) == len(vocabs) and len({v.fingerprint for v in subword.values()}) == 1:
        who = f"this run's models read a subword vocabulary ({sizes} tokens, the tokenizer "
        who += "of a model trained elsewhere)"
    else:
        names = ", ".join(subword)
        who = (
            f"the model {names} reads a subword vocabulary ({sizes} tokens)"
            if len(subword) == 1
            else f"the models {names} read subword vocabularies ({sizes} tokens)"
        )
        if len(subword) < len(vocabs):
            who += ", the others characters"
        who += (
            "; every model reads the same characters of each prompt, "
            "cut at whole tokens of its own vocabulary, and models of different "
            "vocabularies are compared per character (the zero-shot matrix in bits per "
            "character, representation similarity at the characters both have read)"
        )
    return (
        f"Tokens, not characters: {who}. Where the sections below speak of a model's "
        "characters (loss per character, the next character, a context of so many "
        "characters, attention distances), read tokens for these models; bits per "
        "character divide by characters and compare with character models; prompts are "
        "cut at whole tokens within the prompt length in characters; attributions are per "
        "character, each token's score spread evenly over the characters it covers."
    )


def overview(run: RunDir, stages: tuple[Stage, ...], corpora: list[str]) -> Section:
    """What the study is, this run's corpora and presets, and the stages' status."""
    s = Section("overview", "The study and this run")
    spec = read_json(run.root / "study.json") if (run.root / "study.json").is_file() else {}
    s.p(
        "This report follows the study of how the training domain shapes small "
        "character-level GPT models (nanoGPT architecture): the corpora's character "
        "statistics, one model trained per corpus, the cross-domain evaluation, the "
        "softmax output layer and gradient-based attributions. Every finding below is "
        "computed from this run's files; the conclusions check the study's claims against them."
    )
    if spec.get("description"):
        s.p(spec["description"])
    tokens = _tokens_paragraph(_model_vocabs(run))
    if tokens is not None:
        s.p(tokens)
    s.p(
        f"Corpora: {', '.join(display(c) for c in corpora)}. Study preset: "
        f"{spec.get('base', '?')}; training preset: {Path(str(spec.get('preset', '?'))).stem}."
    )
    rows = []
    for stage in stages:
        rec = stage.record(run)
        if rec is None:
            continue
        rows.append(
            {
                "stage": stage.name,
                "status": str(rec.status),
                "seconds": rec.seconds,
                "note": "" if rec.done else rec.message or "",
            }
        )
    if rows:
        s.table(pd.DataFrame(rows), "Stages of this run (time of the last run that did work)")
    versions_path = run.root / "versions.json"
    if versions_path.is_file():
        versions = read_json(versions_path)
        s.note("Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    return s


def stage_section(view: StageView) -> Section:
    """The stage's own section, or a note saying why its results are missing."""
    sid = view.stage.name
    if view.tables is None or view.stage.section is None:
        s = Section(sid, view.stage.heading)
        if view.tables is None:
            s.missing(view.reason)
        return s
    try:
        return view.stage.section(view)
    except (Exception, SystemExit) as e:  # one broken section must not hide the others
        s = Section(sid, view.stage.heading)
        s.missing(f"this section could not be built: {type(e).__name__}: {e}")
        return s


def conclusions_section(claims: list[Claim]) -> Section:
    """Every claim with its verdict and evidence, grouped by the part of the study."""
    s = Section("conclusions", "Conclusions: the study's claims checked on this run")
    table = claims_frame(claims)
    counts = table["verdict"].value_counts()
    parts = [f"{counts.get(v, 0)} {v}" for v in VERDICTS if counts.get(v, 0)]
    s.p(
        f"{len(table)} claims: " + ", ".join(parts) + ". Each verdict is computed from "
        "this run's tables and the evidence gives the numbers it rests on. A claim about a "
        "domain is checked on every replicate model of the domain and decided across them "
        "(the model is the unit of inference): it holds when a t-test over the models' "
        "effects rejects the null in the claim's direction after Holm's correction over "
        "every tested claim of this report; partly when every model agrees in direction "
        'but the test does not reject; "one model" when a single model measured it (its '
        'own verdict is in the evidence: train more with [train] seeds); "not measured" '
        "when this run has no data that can test the claim (for example, a run that ends "
        "before the iteration the claim is about). Small models trained briefly need not "
        "reproduce a study of larger models trained far longer."
    )
    if table.empty:
        return s
    sections = list(dict.fromkeys(table["section"]))
    overview_t = table.groupby(["section", "verdict"], sort=False).size().unstack(fill_value=0)
    overview_t = overview_t.reindex(sections)
    overview_t = overview_t[[str(v) for v in VERDICTS if str(v) in overview_t]]
    s.table(overview_t.reset_index(), "Verdicts by part of the study", max_rows=-1)
    for sec in sections:
        s.h3(sec)
        part = table[table["section"] == sec][["claim", "scope", "verdict", "evidence"]]
        s.table(part, "", "report/conclusions.csv", max_rows=-1)
    return s


def build_report(
    run: RunDir, stages: tuple[Stage, ...], figdir: Path
) -> tuple[list[Section], list[Claim]]:
    """The report's sections and every claim, from the stages' results."""
    figdir.mkdir(parents=True, exist_ok=True)
    corpora = corpus_names(run)
    views = [stage_view(s, run, corpora, figdir) for s in stages if s.name != "report"]
    adjusted = iter(adjust([c for v in views for c in v.claims]))  # one family: the report
    for v in views:
        v.claims = [next(adjusted) for _ in v.claims]
    detailed = [(v.stage.name, stage_section(v)) for v in views if v.stage.section is not None]
    claims = [c for v in views for c in v.claims]
    conclusions = conclusions_section(claims)
    section_of = {name: (sec.id, sec.title) for name, sec in detailed}
    section_of["conclusions"] = (conclusions.id, conclusions.title)
    headline = next(
        (v.out / v.stage.headline for v in views if v.stage.headline and v.tables is not None),
        None,
    )
    summary = summary_section(claims, section_of, headline)
    sections = [summary, overview(run, stages, corpora), *(sec for _, sec in detailed)]
    sections.append(conclusions)
    return sections, claims
