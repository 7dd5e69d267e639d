"""A Hugging Face GPT-2 with a BPE tokenizer (trained with ``tokenizers`` on the corpora,
made here) imported and taken through every stage of the smoke study.

The imported model computes what ``transformers`` computes (tanh GELU, biases, its own
ids); the study's other corpora are trained with its tokenizer; the zero-shot table is
in bits per character as well as per token; attributions are by character class; a
tokenizer that changes a corpus character is refused with one line, nothing written.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from tests.data.test_subword import train_bpe

from domaingpt.cli import main
from domaingpt.context.rundir import RunDir
from domaingpt.data.charclass import CLASSES
from domaingpt.data.tokenizer import is_subword
from domaingpt.interop.importer import import_hf
from domaingpt.model.checkpoint import find_checkpoint, list_checkpoints, load_checkpoint
from domaingpt.study.runner import run_study
from domaingpt.study.spec import load_study

if os.environ.get("CI"):
    import tokenizers as tk
    import transformers
else:
    tk = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")


def write_gpt2(folder: Path, tokenizer_json: str, corpus: Path, steps=(0, 10, 20)) -> Path:
    """A small GPT-2 (GPT-2's tanh GELU and biases) trained a few steps on ``corpus``
    with the tokenizer, saved as ``stepN`` folders: a history."""
    tok = tk.Tokenizer.from_str(tokenizer_json)
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        vocab_size=tok.get_vocab_size(),
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=2,
        activation_function="gelu_new",
        bos_token_id=None,
        eos_token_id=None,
    )
    model = transformers.GPT2LMHeadModel(cfg)
    ids = torch.tensor(tok.encode(corpus.read_text()).ids)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for step in range(max(steps) + 1):
        if step in steps:
            out = folder / f"step{step}"
            model.save_pretrained(out, safe_serialization=True)
            tok.save(str(out / "tokenizer.json"))
        starts = torch.randint(0, len(ids) - 65, (8,), generator=g)
        x = torch.stack([ids[s : s + 65] for s in starts])
        loss = model(x[:, :-1], labels=x[:, :-1]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return folder


@pytest.fixture(scope="module")
def bpe_model(tmp_path_factory, corpora) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("bpe") / "hf-verse"
    text = train_bpe(corpora.paths)
    return write_gpt2(folder, text, corpora.path("shakespeare")), text


def test_import_computes_what_transformers_computes(bpe_model, corpora, tmp_path) -> None:
    folder, text = bpe_model
    import_hf(folder, tmp_path / "run", name="verse", log=lambda _: None)
    history = list_checkpoints(tmp_path / "run" / "models" / "verse" / "checkpoints", "iter")
    assert [c.iteration for c in history] == [0, 10, 20]
    loaded = load_checkpoint(find_checkpoint(tmp_path / "run" / "models" / "verse"))
    assert is_subword(loaded.vocab) and loaded.model.config.gelu == "tanh"
    hf = transformers.GPT2LMHeadModel.from_pretrained(folder / "step20").eval()
    sample = corpora.path("wikipedia").read_text()[500:700]
    ids = torch.tensor(loaded.vocab.encode(sample).ids[:64].astype(np.int64))[None]
    assert ids.tolist()[0] == tk.Tokenizer.from_str(text).encode(sample).ids[:64]
    with torch.no_grad():
        ours, _ = loaded.model(ids)
        theirs = hf(ids).logits
    assert float((ours - theirs).abs().max()) < 1e-5


def test_the_smoke_study_runs_on_a_bpe_model(bpe_model, corpora, tmp_path) -> None:
    folder, _ = bpe_model
    study = tmp_path / "study.toml"
    study.write_text("[study]\n" + corpora.line + f'models = {{ shakespeare = "hf:{folder}" }}\n')
    log: list[str] = []
    result = run_study(
        load_study(study, preset="smoke"), tmp_path / "run", progress=False, log=log.append
    )
    run = RunDir(tmp_path / "run")
    assert result.ok, [o.message for o in result.failed]
    records = {p.stem: p for p in (run.root / "stages").glob("*.json")}
    assert len(records) == 11
    assert all('"done"' in p.read_text() for p in records.values()), log[-5:]
    assert is_subword(run.vocab())
    # the models trained here read the imported model's tokenizer
    for name in ("math", "wikipedia"):
        assert find_checkpoint(run.model(name)).vocab_fingerprint == run.vocab().fingerprint
    zs = pd.read_csv(run.root / "evaluate" / "zero_shot.csv")
    assert (zs["n_chars"] > 1.3 * zs["n_tokens"]).all()
    bits = zs["loss_nats"] * zs["n_tokens"] / zs["n_chars"] / math.log(2.0)
    assert np.allclose(zs["bits_per_char"], bits, rtol=1e-9)
    # every model reads its own corpus best, in bits per character
    final = zs[zs["iteration"] == zs.groupby("model")["iteration"].transform("max")]
    matrix = final.pivot(index="model", columns="corpus", values="bits_per_char")
    assert all(matrix.loc[m].idxmin() == m for m in matrix.index)
    # prompts are cut by characters: fewer tokens than characters
    prompts = pd.read_json(run.root / "softmax" / "prompts.jsonl", lines=True)
    corpus_prompts = prompts[prompts["corpus"] != "user"]
    assert corpus_prompts["length"].sum() < corpus_prompts["text"].str.len().sum()
    # never more tokens than the model's block_size (a character of several bytes is
    # several byte-level pieces: more tokens than characters there)
    assert corpus_prompts["length"].max() <= find_checkpoint(run.model("math")).block_size
    # attributions by character class count characters, not tokens: the in-domain
    # characters of the math model's classes are the characters of the math prompts
    by_class = pd.read_csv(run.root / "saliency" / "by_class.csv")
    assert set(by_class["char_class"]) <= set(CLASSES)
    explained = pd.read_json(run.root / "saliency" / "prompts.jsonl", lines=True)
    chars = explained.loc[explained["corpus"] == "math", "text"].str.len().sum()
    tokens = explained.loc[explained["corpus"] == "math", "length"].sum()
    final = by_class[(by_class["model"] == "math") & (by_class["domain"] == "in")]
    final = final[final["iteration"] == final["iteration"].max()]
    for _, g in final.groupby("method"):
        assert g["n_chars"].sum() == chars > tokens
        assert g["total_share"].sum() == pytest.approx(1.0)
    matrix_md = (run.root / "evaluate" / "zero_shot.md").read_text()
    assert "nats per token" in matrix_md and "published matrix" not in matrix_md
    report = (run.root / "report.md").read_text()
    assert "Tokens, not characters" in report
    assert "bits per character of the model in each row" in report
    assert "imported" in report or "Hugging Face" in report


def test_a_tokenizer_that_changes_a_corpus_character_is_refused(corpora, tmp_path) -> None:
    lower = train_bpe(corpora.paths, normalizer=tk.normalizers.Lowercase())
    folder = write_gpt2(tmp_path / "hf-lower", lower, corpora.path("shakespeare"), steps=(0,))
    study = tmp_path / "study.toml"
    study.write_text("[study]\n" + corpora.line + f'models = {{ shakespeare = "hf:{folder}" }}\n')
    result = run_study(
        load_study(study, preset="smoke"), tmp_path / "run", progress=False, log=lambda _: None
    )
    (failed,) = result.failed
    assert failed.stage == "train" and failed.user_error
    assert "\n" not in failed.message
    assert "cannot read A of corpus 'shakespeare' back (it decodes to 'a')" in failed.message
    assert not (tmp_path / "run" / "vocab.json").exists()
    assert not (tmp_path / "run" / "models").exists()


def test_export_and_import_again(bpe_model, corpora, tmp_path) -> None:
    """An imported subword model exports as a GPT-2 folder transformers loads with its
    tokenizer (the same logits), and imports back to the same checkpoint, bit for bit."""
    folder, _ = bpe_model
    import_hf(folder / "step20", tmp_path / "run", name="verse", log=lambda _: None)
    model_dir = tmp_path / "run" / "models" / "verse"
    assert main(["export", str(model_dir), str(tmp_path / "out")]) == 0
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert hf.config.activation_function == "gelu_new"
    loaded = load_checkpoint(find_checkpoint(model_dir))
    sample = corpora.path("math").read_text()[300:420]
    ids = tok(sample, return_tensors="pt")["input_ids"][:, :64]
    assert ids[0].tolist() == loaded.vocab.encode(sample).ids[:64].tolist()
    with torch.no_grad():
        assert float((loaded.model(ids)[0] - hf(ids).logits).abs().max()) < 1e-5
    card = (tmp_path / "out" / "README.md").read_text()
    assert "subword tokenizer of 400 ids" in card and "one per character" not in card
    import_hf(tmp_path / "out", tmp_path / "again", name="verse", log=lambda _: None)
    a = find_checkpoint(model_dir)
    b = find_checkpoint(tmp_path / "again" / "models" / "verse")
    assert a.tensor_path.read_bytes() == b.tensor_path.read_bytes()
    assert a.vocab_fingerprint == b.vocab_fingerprint


def test_a_bpe_model_beside_character_models_in_one_study(bpe_model, corpora, tmp_path) -> None:
    """Models reading different vocabularies in one run: the imported GPT-2 keeps its
    BPE, the study's own models read characters (``[train] vocabulary``); every stage
    reads each model in its own vocabulary on the same characters."""
    folder, _ = bpe_model
    study = tmp_path / "study.toml"
    study.write_text(
        "[study]\n"
        + corpora.line
        + f'models = {{ shakespeare = "hf:{folder}" }}\n[train]\nvocabulary = "characters"\n'
    )
    log: list[str] = []
    result = run_study(
        load_study(study, preset="smoke"), tmp_path / "run", progress=False, log=log.append
    )
    run = RunDir(tmp_path / "run")
    assert result.ok, [o.message for o in result.failed]
    assert all('"done"' in p.read_text() for p in (run.root / "stages").glob("*.json"))
    assert not is_subword(run.vocab())  # the models trained here read characters
    assert is_subword(run.model_vocab("shakespeare"))
    assert run.model_vocab("math").fingerprint == run.vocab().fingerprint
    zs = pd.read_csv(run.root / "evaluate" / "zero_shot.csv")
    reads_tokens = zs["model"] == "shakespeare"
    assert (zs.loc[reads_tokens, "n_chars"] > 1.3 * zs.loc[reads_tokens, "n_tokens"]).all()
    assert (zs.loc[~reads_tokens, "n_chars"] == zs.loc[~reads_tokens, "n_tokens"]).all()
    # both vocabularies are scored on the same characters of each corpus (the shared
    # part of their validation splits; they differ by a token at the start)
    last = zs[zs["iteration"] == zs.groupby("model")["iteration"].transform("max")]
    chars_read = last.pivot(index="corpus", columns="model", values="n_chars")
    assert (
        (chars_read["shakespeare"] - chars_read["math"]).abs() < 0.01 * chars_read["math"]
    ).all()
    # prompts: one set per vocabulary, the same characters, ids unique in the run
    prompts = pd.read_json(run.root / "softmax" / "prompts.jsonl", lines=True)
    assert prompts["prompt_id"].is_unique and len(prompts) % 2 == 0
    last = pd.read_csv(run.root / "softmax" / "last.csv")
    read = {m: set(g["prompt_id"]) for m, g in last.groupby("model")}
    assert read["math"] == read["wikipedia"] and not read["math"] & read["shakespeare"]
    chars = prompts[prompts["prompt_id"].isin(read["math"])]
    tokens = prompts[prompts["prompt_id"].isin(read["shakespeare"])]
    assert len(chars) == len(tokens) == len(prompts) // 2
    assert (chars["length"] == chars["text"].str.len()).all()
    assert tokens["length"].sum() < tokens["text"].str.len().sum()
    assert tokens["length"].max() <= find_checkpoint(run.model("shakespeare")).block_size
    assert chars["text"].tolist() == tokens["text"].tolist()
    assert chars["corpus"].tolist() == tokens["corpus"].tolist()
    # representations of the two vocabularies compared where both read the same text
    cka = pd.read_csv(run.root / "similarity" / "cka.csv")
    across = cka[(cka["kind"] == "domains") & (cka["model_a"] == "shakespeare")]
    assert set(across["model_b"]) == {"math", "wikipedia"}
    assert (across["n_prompts"] == len(chars)).all()
    assert (across["n_tokens"] >= len(chars)).all() and across["cka"].notna().all()
    # attributions count characters: the same characters of math prompts for both models
    explained = pd.read_json(run.root / "saliency" / "prompts.jsonl", lines=True)
    per_prompt = pd.read_csv(run.root / "saliency" / "per_prompt.csv")
    by_class = pd.read_csv(run.root / "saliency" / "by_class.csv")
    by_class = by_class[by_class["method"] == by_class["method"].iloc[0]]
    final = by_class[
        by_class["iteration"] == by_class.groupby("model")["iteration"].transform("max")
    ]
    counted = {}
    for model in ("math", "shakespeare"):
        ids = set(per_prompt.loc[per_prompt["model"] == model, "prompt_id"])
        mine = explained[explained["prompt_id"].isin(ids) & (explained["corpus"] == "math")]
        rows = final[
            (final["model"] == model) & (final["domain"] == ("in" if model == "math" else "out"))
        ]
        counted[model] = mine["text"].str.len().sum()
        if model == "math":
            assert rows["n_chars"].sum() == counted[model]
        else:  # out of domain pools the math and the wikipedia prompts
            assert rows["n_chars"].sum() > counted[model]
    assert counted["math"] == counted["shakespeare"] > 0
    report = (run.root / "report.md").read_text()
    assert "the model shakespeare reads a subword vocabulary" in report


def test_which_tokenizer_the_models_trained_here_read(bpe_model, corpora, tmp_path) -> None:
    """Imported models of two tokenizers: the study's own models read characters unless
    ``[train] vocabulary`` names the corpus whose imported tokenizer they should read."""
    from domaingpt.interop.external import study_tokenizer

    folder, _ = bpe_model
    other = write_gpt2(tmp_path / "hf-other", train_bpe(corpora.paths, size=300),
                       corpora.path("math"), steps=(0,))  # fmt: skip
    models = {"shakespeare": f"hf:{folder}", "math": f"hf:{other}"}
    notes: list[str] = []
    assert study_tokenizer(models, notes.append) is None
    assert "read different vocabularies" in notes[0]
    verse = study_tokenizer(models, notes.append, of="shakespeare")
    sums = study_tokenizer(models, notes.append, of="math")
    assert verse is not None and sums is not None
    assert verse.size == 400 and sums.size == 300
    assert study_tokenizer({"shakespeare": f"hf:{folder}"}, notes.append).size == 400
