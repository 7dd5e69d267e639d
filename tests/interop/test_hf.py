"""Export to Hugging Face ``transformers`` and import back: the same model on both sides.

Logits equal within 1e-5 on real text from every corpus (``<unk>`` characters too),
greedy generation gives the same text, the tokenizer reads every character of the three
corpora as ours does, and export -> import gives back the same checkpoint files.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from domaingpt.context.rundir import RunDir
from domaingpt.data.vocab import Vocab
from domaingpt.interop.hf import export
from domaingpt.interop.importer import import_hf, read_hf, to_domaingpt
from domaingpt.model.checkpoint import find_checkpoint, list_checkpoints, load_checkpoint
from domaingpt.model.generate import generate_text

CORPORA = ("shakespeare", "math", "wikipedia")


def need(module: str):
    """The interop extra is part of ``[dev]``: on CI a missing one fails, elsewhere it skips."""
    if os.environ.get("CI"):
        return importlib.import_module(module)
    return pytest.importorskip(module)


transformers = need("transformers")
need("tokenizers")

pytestmark = pytest.mark.usefixtures("single_thread")


def corpus_text(corpora, corpus: str, n: int = 32 * 48, at: float = 0.5) -> str:
    text = corpora.path(corpus).read_text()
    start = int(len(text) * at)
    return text[start : start + n]


def hf_pair(folder: Path):
    model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    return model, transformers.AutoTokenizer.from_pretrained(folder)


def logits_gap(ours, hf, ids: list[int], block: int) -> float:
    n = len(ids) // block * block
    x = torch.tensor(ids[:n]).view(-1, block)
    with torch.no_grad():
        a, _ = ours(x)
        b = hf(x).logits
    return float((a - b).abs().max())


@pytest.fixture(scope="module")
def exported(smoke_study, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hf") / "shakespeare"
    export(smoke_study.root / "models" / "shakespeare", out, log=lambda m: None)
    return out


def test_config_is_exact_gelu_gpt2(exported, smoke_study):
    config = json.loads((exported / "config.json").read_text())
    ours = load_checkpoint(find_checkpoint(smoke_study.root / "models" / "shakespeare"))
    assert config["architectures"] == ["GPT2LMHeadModel"]
    assert config["activation_function"] == "gelu"  # exact, not GPT-2's tanh "gelu_new"
    assert config["n_positions"] == ours.model.config.block_size == 32
    assert config["tie_word_embeddings"] is True
    assert config["layer_norm_epsilon"] == 1e-5
    assert config["vocab_size"] == ours.vocab.size
    assert config["bos_token_id"] is None and config["eos_token_id"] is None
    assert config["pad_token_id"] == 0
    assert config["domaingpt"]["iteration"] == 60
    hf, tok = hf_pair(exported)
    assert hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()
    assert tok.unk_token == "<unk>" and tok.unk_token_id == 0 and len(tok) == ours.vocab.size


def test_logits_equal_on_every_corpus(exported, smoke_study, corpora):
    ours = load_checkpoint(find_checkpoint(smoke_study.root / "models" / "shakespeare"))
    hf, tok = hf_pair(exported)
    for corpus in CORPORA:
        text = corpus_text(corpora, corpus)
        ids = tok.encode(text)
        assert ids == ours.vocab.encode(text).ids.tolist(), corpus
        assert logits_gap(ours.model, hf, ids, 32) < 1e-5, corpus


def test_tokenizer_round_trips_every_character(exported, smoke_study, corpora):
    _, tok = hf_pair(exported)
    vocab = RunDir(smoke_study.root).vocab()
    for corpus in CORPORA:
        text = corpora.path(corpus).read_text()
        chars = "".join(sorted(set(text)))
        ids = tok.encode(chars)
        assert ids == vocab.encode(chars).ids.tolist() and 0 not in ids, corpus
        assert tok.decode(ids) == chars, corpus
        sample = corpus_text(corpora, corpus, 5000, at=0.3)  # spaces, newlines, as they come
        assert tok.decode(tok.encode(sample)) == sample, corpus
    # Outside the vocabulary: <unk> (id 0), as ours; the text "<unk>" is five characters.
    odd = "a😀b<unk>"
    assert tok.encode(odd) == vocab.encode(odd).ids.tolist()
    assert tok.encode(odd)[1] == 0 and len(tok.encode(odd)) == 8


def test_unknown_characters_and_a_model_without_biases(train_smoke, tmp_path, corpora):
    # A vocabulary of the verse's characters only: math and wikipedia have <unk>s.
    run = tmp_path / "run"
    verse = str(corpora.path("shakespeare"))
    assert train_smoke(run, "model.bias=false", extra=["--vocab", verse]) == 0
    ours = load_checkpoint(find_checkpoint(run / "models" / "shakespeare"))
    assert ours.model.config.bias is False
    out = tmp_path / "hf"
    export(run / "models" / "shakespeare", out, log=lambda m: None)
    hf, tok = hf_pair(out)
    biases = [p for n, p in hf.named_parameters() if n.endswith(".bias")]
    assert biases and all(not b.any() for b in biases)  # zero biases: the same function
    unks = 0
    for corpus in CORPORA:
        text = corpus_text(corpora, corpus, 32 * 96)
        ids = tok.encode(text)
        assert ids == ours.vocab.encode(text).ids.tolist(), corpus
        unks += ids.count(0)
        assert logits_gap(ours.model, hf, ids, 32) < 1e-5, corpus
    assert unks > 0
    # Back again: a model without biases, the same tensors.
    import_hf(out, tmp_path / "back", log=lambda m: None)
    back = load_checkpoint(find_checkpoint(tmp_path / "back" / "models" / "shakespeare"))
    assert back.model.config == ours.model.config
    assert back.info.tensor_path.read_bytes() == ours.info.tensor_path.read_bytes()


def test_greedy_generation_gives_the_same_text(shakespeare_run, tmp_path):
    model_dir = shakespeare_run.run.model("shakespeare")
    ours = load_checkpoint(find_checkpoint(model_dir))
    out = tmp_path / "hf"
    export(model_dir, out, log=lambda m: None)
    generate = transformers.pipeline("text-generation", model=str(out), device="cpu")
    for prompt in ("ROMEO:\nI", "\nThe king"):
        n = ours.model.config.block_size - len(prompt)  # GPT-2 has no context cropping
        theirs = generate(prompt, max_new_tokens=n, do_sample=False)[0]["generated_text"]
        mine = prompt + generate_text(ours.model, ours.vocab, prompt, n, temperature=0)
        assert theirs == mine
        assert len(set(mine[len(prompt) :])) > 3  # real text, not one repeated character


def test_pipeline_with_defaults_long_prompts_and_batches(shakespeare_run, tmp_path, corpora):
    model_dir = shakespeare_run.run.model("shakespeare")
    ours = load_checkpoint(find_checkpoint(model_dir))
    block = ours.model.config.block_size
    out = tmp_path / "hf"
    export(model_dir, out, log=lambda m: None)
    generate = transformers.pipeline("text-generation", model=str(out), device="cpu")
    hf, tok = generate.model, generate.tokenizer

    def greedy(prompt: str, n: int) -> str:
        return generate_text(ours.model, ours.vocab, prompt, n, temperature=0)

    # Default arguments: sampling up to the context length, then a clean stop.
    torch.manual_seed(0)
    text = generate("ROMEO:")[0]["generated_text"]
    assert text.startswith("ROMEO:") and len(text) == block
    with torch.no_grad():
        ids = hf.generate(**tok("ROMEO:", return_tensors="pt"), do_sample=False)
    assert ids.shape == (1, block)
    assert tok.decode(ids[0]) == "ROMEO:" + greedy("ROMEO:", block - 6)

    # A prompt longer than the context: the tokenizer keeps its last `block` characters
    # (the context domaingpt sample predicts the next one from); the pipeline keeps as
    # many as leave room for the new ones ("hole").
    long = corpus_text(corpora, "shakespeare", 10 * block)
    assert tok(long, truncation=True)["input_ids"] == ours.vocab.encode(long[-block:]).ids.tolist()
    n = 12
    theirs = generate(long, max_new_tokens=n, do_sample=False, handle_long_generation="hole")
    assert theirs[0]["generated_text"] == long + greedy(long[-(block - n) :], n)

    # Two prompts of different lengths in one padded batch: each as if alone.
    prompts = ["ROMEO:\nI", "\nThe king of"]
    batch = tok(prompts, padding=True, return_tensors="pt")
    assert batch["input_ids"][0, :4].tolist() == [0] * 4  # <unk> pads, on the left
    assert batch["attention_mask"][0].tolist() == [0] * 4 + [1] * 8
    n = block - 12
    with torch.no_grad():
        rows = hf.generate(**batch, max_new_tokens=n, do_sample=False)
    got = tok.batch_decode(rows, skip_special_tokens=True)
    assert got == [p + greedy(p, n) for p in prompts]
    piped = generate(prompts, batch_size=2, max_new_tokens=n, do_sample=False)
    assert [r[0]["generated_text"] for r in piped] == got


def test_export_is_shareable(exported, smoke_study, corpora, tmp_path_factory):
    """No path of this machine in any file, every file 0644, a model card whose YAML
    header names the library, the pipeline, the corpus and the run's loss."""
    yaml = pytest.importorskip("yaml")  # transformers depends on PyYAML
    run = json.loads((smoke_study.root / "models" / "shakespeare" / "run.json").read_text())
    assert run["corpus_path"]  # the source records it; the export must not
    local = {str(corpora.dir.resolve()), str(tmp_path_factory.getbasetemp().resolve())}
    files = sorted(p for p in exported.iterdir() if p.is_file())
    assert {p.name for p in files} >= {
        "config.json", "generation_config.json", "model.safetensors", "README.md",
        "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    }  # fmt: skip
    for path in files:
        data = path.read_bytes()
        assert not [d for d in local if d.encode() in data], path.name
        assert path.stat().st_mode & 0o777 == 0o644, path.name
    meta = json.loads((exported / "config.json").read_text())["domaingpt"]
    assert "config" not in meta["run"] and "corpus_path" not in meta["run"]  # once, no path
    assert meta["record"]["config"] == run["config"]
    assert json.loads((exported / "generation_config.json").read_text())["max_length"] == 32

    card = (exported / "README.md").read_text()
    assert card.startswith("---\n")
    header = yaml.safe_load(card.split("---\n")[1])
    assert header["library_name"] == "transformers"
    assert header["pipeline_tag"] == "text-generation"
    assert header["datasets"] == ["shakespeare"] and "shakespeare" in header["tags"]
    metrics = {m["type"]: m["value"] for m in header["model-index"][0]["results"][0]["metrics"]}
    record = load_checkpoint(find_checkpoint(smoke_study.root / "models" / "shakespeare"))
    val = record.info.meta.val_loss
    assert metrics["loss"] == pytest.approx(val, abs=1e-6)
    assert metrics["bpc"] == pytest.approx(val / math.log(2), abs=1e-6)
    assert run["corpus_sha256"] in card


def test_history_round_trip_is_bit_equal(smoke_study, tmp_path, cli, corpora):
    source = smoke_study.root / "models" / "math"
    code, _, err = cli("export", source, tmp_path / "hf", "--all", "--quiet")
    assert code == 0, err
    steps = sorted(p.name for p in (tmp_path / "hf").iterdir())
    assert steps == ["step0", "step10", "step30", "step60"]
    code, _, err = cli("import-hf", tmp_path / "hf", "--out", tmp_path / "back", "-q")
    assert code == 0, err
    back = tmp_path / "back" / "models" / "math"
    originals = list_checkpoints(source / "checkpoints", "iter")
    copies = list_checkpoints(back / "checkpoints", "iter")
    assert [c.iteration for c in copies] == [c.iteration for c in originals] == [0, 10, 30, 60]
    for a, b in zip(originals, copies, strict=True):
        assert a.tensor_path.read_bytes() == b.tensor_path.read_bytes()
        assert a.meta == b.meta  # the record too: corpus, val loss, training config
        assert a.to_dict() == b.to_dict()
    # run.json too, less the corpus's local path (an export does not carry it: the
    # corpus is found by name and SHA-256).
    original_run = json.loads((source / "run.json").read_text())
    assert original_run.pop("corpus_path")
    assert json.loads((back / "run.json").read_text()) == original_run
    # The analyses run on the imported model: the same zero-shot loss as the original's
    # (its corpus found by name and SHA-256 in the data directory).
    code, _, err = cli(
        "evaluate", "--out", tmp_path / "back", "--data-dir", corpora.dir, "--bootstrap", "0", "-q"
    )
    assert code == 0, err
    theirs = pd.read_csv(tmp_path / "back" / "evaluate" / "zero_shot.csv")
    mine = pd.read_csv(smoke_study.root / "evaluate" / "zero_shot.csv")
    mine = mine[(mine["model"] == "math") & (mine["corpus"] == "math")]
    assert theirs["loss_nats"].iloc[0] == pytest.approx(mine["loss_nats"].iloc[0], abs=1e-9)


def test_a_foreign_character_model_imports_in_our_order(exported, tmp_path, corpora):
    """A GPT-2 character model from elsewhere: ids in another order, no domaingpt record."""
    foreign = tmp_path / "foreign"
    shutil.copytree(exported, foreign)
    tok = json.loads((foreign / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    tokens = sorted(vocab, key=vocab.get)
    order = list(range(len(tokens)))[::-1]  # new id j holds old id order[j]
    tok["model"]["vocab"] = {tokens[old]: new for new, old in enumerate(order)}
    tok["added_tokens"][0]["id"] = order.index(0)
    (foreign / "tokenizer.json").write_text(json.dumps(tok))
    tensors = load_file(foreign / "model.safetensors")
    tensors["transformer.wte.weight"] = tensors["transformer.wte.weight"][order].contiguous()
    save_file(tensors, foreign / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((foreign / "config.json").read_text())
    del config["domaingpt"]
    (foreign / "config.json").write_text(json.dumps(config))

    model, vocab_ours = to_domaingpt(read_hf(foreign))
    assert model.config.bias is True and vocab_ours.chars == tuple(tokens[1:])
    hf, hf_tok = hf_pair(foreign)
    text = corpus_text(corpora, "shakespeare", 32 * 8)
    ids_ours = vocab_ours.encode(text).ids.tolist()
    x_hf = torch.tensor(hf_tok.encode(text)).view(-1, 32)
    with torch.no_grad():
        a, _ = model(torch.tensor(ids_ours).view(-1, 32))
        b = hf(x_hf).logits[..., order]  # their logits in our id order
    assert float((a - b).abs().max()) < 1e-5


def test_refusals_name_the_fix(exported, smoke_study, tmp_path, cli, cli_error, monkeypatch):
    source = smoke_study.root / "models" / "shakespeare"
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert "not an earlier domaingpt export" in cli_error("export", source, tmp_path / "busy")
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    assert "--overwrite" in cli_error("export", source, exported)
    # Altered: GPT-2's tanh GELU named over an exported (exact GELU) model.
    tanh = tmp_path / "tanh"
    shutil.copytree(exported, tanh)
    config = json.loads((tanh / "config.json").read_text())
    config["activation_function"] = "gelu_new"
    (tanh / "config.json").write_text(json.dumps(config))
    assert "exact GELU of the model config" in cli_error(
        "import-hf", tanh, "--out", tmp_path / "r1"
    )
    # Not the tokenizer it was exported with (a word among the characters: a subword
    # tokenizer now, whose fingerprint is not the recorded one).
    words = tmp_path / "words"
    shutil.copytree(exported, words)
    tok = json.loads((words / "tokenizer.json").read_text())
    tok["model"]["vocab"]["the"] = tok["model"]["vocab"].pop("t")
    (words / "tokenizer.json").write_text(json.dumps(tok))
    assert "fingerprint differs" in cli_error("import-hf", words, "--out", tmp_path / "r2")
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()
    # A vocabulary other than the run's: the model keeps its own, the run's stays.
    other = Vocab(("a", "b"))
    (tmp_path / "r3").mkdir()
    (tmp_path / "r3" / "vocab.json").write_text(json.dumps(other.to_json()))
    code, _, err = cli("import-hf", exported, "--out", tmp_path / "r3")
    assert code == 0 and "keeps its own" in err
    r3 = RunDir(tmp_path / "r3")
    assert r3.vocab().fingerprint == other.fingerprint
    (name,) = r3.trained_models()
    assert r3.model_vocab(name).fingerprint != other.fingerprint
    # Without the extra: one line naming the install.
    monkeypatch.setitem(sys.modules, "transformers", None)
    err = cli_error("export", source, tmp_path / "none")
    assert "pip install 'domaingpt[interop]'" in err
