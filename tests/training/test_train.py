"""Training on the real Shakespeare corpus with small models: the loss falls, the history
is written, and an interrupted run resumed reaches bit-identical weights."""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter

import numpy as np
import pytest
import torch

from domaingpt.core.config import build_config
from domaingpt.core.io import read_jsonl
from domaingpt.data.encoding import encode_corpus
from domaingpt.data.vocab import Vocab
from domaingpt.errors import DomainGPTError
from domaingpt.model.checkpoint import (
    find_checkpoint,
    list_checkpoints,
    load_checkpoint,
    read_tensors,
)
from domaingpt.model.gpt import GPT, GPTConfig
from domaingpt.training import loop as train_mod
from domaingpt.training.loop import lr_at, train
from domaingpt.training.trainer import Trainer


@pytest.fixture(scope="module")
def shakespeare(corpora):
    found = [corpora.resolve(n) for n in corpora.names]
    vocab = Vocab.from_texts(c.read_text() for c in found)
    enc = encode_corpus(found[0], vocab)
    train_ids, val_ids = enc.split(0.1)
    return found[0], vocab, train_ids, val_ids


def run(shakespeare, out, overrides, log=lambda m: None, **kw):
    corpus, vocab, tr, va = shakespeare
    cfg = build_config("smoke", overrides)
    return train(corpus.name, corpus.sha256, tr, va, vocab, cfg, out, progress=False, log=log, **kw)


def test_loss_falls_below_unigram_level(shakespeare, tmp_path):
    result = run(
        shakespeare,
        tmp_path / "m",
        ["train.max_iters=250", "train.batch_size=16", "model.n_embd=64", "model.n_head=4"],
    )
    # Below the corpus's unigram entropy: the model uses context. At iteration 0, near
    # uniform over the vocabulary.
    corpus, vocab = shakespeare[0], shakespeare[1]
    counts = np.array(list(Counter(corpus.read_text()).values()), dtype=float)
    unigram = float(-(counts / counts.sum() * np.log(counts / counts.sum())).sum())
    assert result.val_loss < unigram - 0.5
    rows = read_jsonl(tmp_path / "m" / "metrics.jsonl")
    assert rows[0]["iter"] == 0 and rows[0]["val_loss"] > math.log(vocab.size) - 0.5
    assert rows[-1]["iter"] == 250 and rows[-1]["val_loss_full"] == pytest.approx(result.val_loss)
    assert (tmp_path / "m" / "loss.png").stat().st_size > 1000


def test_history_checkpoints_and_samples(shakespeare, tmp_path):
    run(shakespeare, tmp_path / "m", ["train.max_iters=60", "train.checkpoints=[0, 20, 60]"])
    history = list_checkpoints(tmp_path / "m" / "checkpoints", "iter")
    assert [c.iteration for c in history] == [0, 20, 60]
    samples = read_jsonl(tmp_path / "m" / "samples.jsonl")
    assert [s["iter"] for s in samples] == [0, 20, 60]
    # 60 sampled ids each; an untrained model may sample <unk> (id 0), written "<unk>"
    assert all(len(s["text"].replace("<unk>", "?")) == 60 for s in samples)
    # the sample is a function of the checkpoint: regenerate iteration 20's text
    from domaingpt.model.generate import generate_text

    loaded = load_checkpoint(find_checkpoint(tmp_path / "m", 20))
    assert generate_text(loaded.model, loaded.vocab, "\n", 60, seed=1) == samples[1]["text"]
    assert loaded.meta.val_loss == pytest.approx(samples[1]["val_loss"])
    # history checkpoints carry weights only; resume ones carry the optimizer too
    assert not any(k.startswith("optim.") for k in read_tensors(history[-1]))
    resume = list_checkpoints(tmp_path / "m" / "checkpoints", "resume")
    assert len(resume) == 2 and any(k.startswith("optim.") for k in read_tensors(resume[-1]))


def test_interrupted_and_resumed_run_equals_uninterrupted(shakespeare, tmp_path, monkeypatch):
    overrides = [
        "train.max_iters=40",
        "train.resume_interval=10",
        "train.checkpoints=[0, 40]",
        "model.dropout=0.1",
    ]  # dropout: the torch RNG state must be restored too
    a = run(shakespeare, tmp_path / "a", overrides)

    real_step = train_mod.Trainer.step

    def crashing_step(self):
        if self.iteration == 27:
            raise KeyboardInterrupt
        return real_step(self)

    monkeypatch.setattr(train_mod.Trainer, "step", crashing_step)
    with pytest.raises(KeyboardInterrupt):
        run(shakespeare, tmp_path / "b", overrides)
    monkeypatch.setattr(train_mod.Trainer, "step", real_step)
    b = run(shakespeare, tmp_path / "b", overrides, resume=True)
    assert b.resumed_from == 20
    assert b.val_loss == a.val_loss
    wa = read_tensors(find_checkpoint(tmp_path / "a"))
    wb = read_tensors(find_checkpoint(tmp_path / "b"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    rows_a = [r["iter"] for r in read_jsonl(tmp_path / "a" / "metrics.jsonl")]
    rows_b = [r["iter"] for r in read_jsonl(tmp_path / "b" / "metrics.jsonl")]
    assert rows_a == rows_b  # no duplicated rows after the resume


def test_corrupt_newest_resume_checkpoint_falls_back(shakespeare, tmp_path):
    overrides = ["train.max_iters=30", "train.resume_interval=10", "train.checkpoints=[0, 30]"]
    run(shakespeare, tmp_path / "m", overrides)
    newest = list_checkpoints(tmp_path / "m" / "checkpoints", "resume")[-1]
    data = bytearray(newest.tensor_path.read_bytes())
    data[-10] ^= 0xFF
    newest.tensor_path.write_bytes(bytes(data))
    messages = []
    result = run(shakespeare, tmp_path / "m", overrides, log=messages.append, resume=True)
    assert result.resumed_from == 20
    assert any("checksum" in m for m in messages)


def test_existing_run_is_never_silently_reused(shakespeare, tmp_path):
    run(shakespeare, tmp_path / "m", ["train.max_iters=10"])
    with pytest.raises(DomainGPTError, match="pass --resume"):
        run(shakespeare, tmp_path / "m", ["train.max_iters=10"])
    with pytest.raises(DomainGPTError, match=r"different run .*train.lr"):
        run(shakespeare, tmp_path / "m", ["train.max_iters=10", "train.lr=1e-2"], resume=True)
    again = run(
        shakespeare, tmp_path / "m", ["train.max_iters=10", "train.lr=1e-2"], overwrite=True
    )
    assert json.loads((again.model_dir / "run.json").read_text())["config"]["train"]["lr"] == 1e-2


def test_divergence_stops_with_iteration(shakespeare, tmp_path):
    with pytest.raises(DomainGPTError, match=r"diverged.*iterations \d+ and \d+"):
        run(
            shakespeare,
            tmp_path / "m",
            [
                "train.max_iters=20",
                "train.lr=1e6",
                "train.min_lr=1e6",
                "train.grad_clip=0",
                "train.warmup_iters=0",
            ],
        )
    # the iteration-0 checkpoint written before the blow-up is intact
    assert [c.iteration for c in list_checkpoints(tmp_path / "m" / "checkpoints")] == [0]


def test_lr_schedule_shape():
    spec = dataclasses.replace(build_config("cpu-mini").train)
    lrs = [lr_at(i, spec) for i in range(spec.max_iters + 10)]
    assert lrs[0] == pytest.approx(spec.lr / (spec.warmup_iters + 1))
    assert max(lrs) == pytest.approx(spec.lr, rel=1e-3)
    assert lrs[spec.max_iters] == spec.min_lr and lrs[-1] == spec.min_lr
    assert all(
        a >= b for a, b in zip(lrs[spec.warmup_iters :], lrs[spec.warmup_iters + 1 :], strict=False)
    )


def test_compile_that_fails_on_first_use_falls_back_to_eager(monkeypatch, capsys):
    """torch.compile compiles on the first call, where a missing compiler shows: that
    step runs eagerly instead, with one line saying so, and trains as eager does."""

    def broken_compile(module):
        def compiled(*args, **kwargs):
            raise RuntimeError("InductorError: no working C++ compiler found\n(details)")

        return compiled

    cfg = build_config("smoke", ["train.grad_accum=2"])
    ids = torch.randint(1, 20, (2000,)).numpy()
    losses = {}
    for setting in ("off", "on"):
        monkeypatch.setattr(torch, "compile", broken_compile)
        torch.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=20, **cfg.model.__dict__))
        spec = dataclasses.replace(cfg.train, compile=setting)
        trainer = Trainer(model, spec, ids, torch.device("cpu"))
        losses[setting] = [float(trainer.step()) for _ in range(3)]
    assert losses["on"] == losses["off"]
    out = capsys.readouterr().out
    assert out.count("running eagerly") == 1
    assert "torch.compile unavailable (RuntimeError: InductorError: no working C++" in out


def test_train_threads_apply_while_training_and_are_restored(train_smoke, tmp_path):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert train_smoke(tmp_path, "train.threads=1", "train.max_iters=5") == 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    record = json.loads((tmp_path / "models" / "shakespeare" / "run.json").read_text())
    assert record["config"]["train"]["threads"] == 1
