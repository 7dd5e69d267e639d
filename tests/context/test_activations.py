"""What one forward pass shows inside a model (domaingpt.context.activations): the logit lens
by hand, attention statistics on hand-made patterns, the word groups, and the cache that
lets three stages share one forward pass per checkpoint."""

from __future__ import annotations

import math
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from domaingpt.context import activations as internals_module
from domaingpt.context.activations import (
    RESID_STRIDE,
    WORD_GROUPS,
    ActivationCache,
    aligned_rows,
    attention_stats,
    compute_internals,
    internals,
    internals_of,
    lens_logits,
    word_groups,
)
from domaingpt.context.prompts import Prompt, PromptSet
from domaingpt.context.rundir import RunDir
from domaingpt.context.stage import StageContext, run_stage
from domaingpt.core.distributed import Job
from domaingpt.data.vocab import Vocab
from domaingpt.model.checkpoint import CheckpointMeta, save_checkpoint
from domaingpt.model.gpt import GPT, GPTConfig
from domaingpt.stages.saliency.aggregate import relative_positions

V = 11
TEXT = "ab cd ef\nghij klm nop qrs tuv"


def tiny(n_layer: int = 1, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    cfg = GPTConfig(n_layer=n_layer, n_head=2, n_embd=16, block_size=12, vocab_size=V)
    model = GPT(cfg).eval()
    with torch.no_grad():  # away from the near-uniform initialisation
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


def prompt_set(n: int = 4, T: int = 12, seed: int = 1) -> PromptSet:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, V, (n, T + 1), generator=g).numpy()
    return PromptSet(
        [
            Prompt(i, "abc"[i % 3], 0, TEXT[i : i + T], "x", ids[i, :T], int(ids[i, T]), 0)
            for i in range(n)
        ]
    )


@torch.no_grad()
def test_the_last_layers_lens_is_the_models_prediction():
    model = tiny(n_layer=2)
    ids, *_ = prompt_set().tensors()
    logits, cache = model.run_with_cache(ids, ["blocks.1.resid_post"])
    assert torch.equal(lens_logits(model, cache["blocks.1.resid_post"]), logits)
    rec = compute_internals(model, prompt_set())
    assert np.all(rec.lens_kl[:, -1] == 0) and np.all(rec.lens_top1[:, -1] == 1)


def by_hand(logp: np.ndarray, final: np.ndarray, nxt: np.ndarray) -> dict[str, np.ndarray]:
    """Per prompt, the lens statistics of one layer from log-probabilities (N, T, V)."""
    p, pf = np.exp(logp), np.exp(final)
    rows = np.arange(logp.shape[1])
    loss = np.array([-logp[i, rows, nxt[i]] for i in range(len(nxt))])
    return {
        "loss": loss.mean(1),
        "entropy": (-(p * logp).sum(-1) / math.log(2)).mean(1),
        "p": np.exp(-loss).mean(1),
        "kl": ((pf * (final - logp)).sum(-1) / math.log(2)).mean(1),
        "top1": (logp.argmax(-1) == final.argmax(-1)).mean(1),
    }


@torch.no_grad()
def test_a_one_layer_models_lens_by_hand():
    model = tiny(n_layer=1)
    ps = prompt_set()
    rec = compute_internals(model, ps, batch_size=3)
    ids = np.stack([p.ids for p in ps.prompts])
    nxt = np.stack([p.next_ids for p in ps.prompts])
    emb = model.tok_emb.weight.double().numpy()
    # layer 0: the embeddings, through the final LayerNorm and the tied head, written out
    h = emb[ids] + model.pos_emb.weight.double().numpy()[: ids.shape[1]]
    ln = model.ln_f
    normed = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + ln.eps)
    normed = normed * ln.weight.double().numpy() + ln.bias.double().numpy()
    logits0 = normed @ emb.T
    logp0 = logits0 - np.log(np.exp(logits0).sum(-1, keepdims=True))
    # layer 1: the model's own prediction
    final = F.log_softmax(model(torch.from_numpy(ids))[0].double(), -1).numpy()
    for layer, logp in ((0, logp0), (1, final)):
        expected = by_hand(logp, final, nxt)
        np.testing.assert_allclose(rec.lens_loss[:, layer], expected["loss"], rtol=1e-5)
        np.testing.assert_allclose(rec.lens_entropy[:, layer], expected["entropy"], rtol=1e-5)
        np.testing.assert_allclose(rec.lens_p_true[:, layer], expected["p"], rtol=1e-5)
        np.testing.assert_allclose(rec.lens_kl[:, layer], expected["kl"], rtol=1e-4, atol=1e-7)
        np.testing.assert_array_equal(rec.lens_top1[:, layer], expected["top1"])
    assert (rec.lens_kl[:, 0] > 0).all()


@torch.no_grad()
def test_attention_rows_sum_to_one_are_causal_and_the_shares_partition_them():
    model = tiny(n_layer=2)
    ps = prompt_set()
    ids, *_ = ps.tensors()
    _, cache = model.run_with_cache(ids, ["blocks.0.attn.pattern", "blocks.1.attn.pattern"])
    for pattern in cache.values():
        torch.testing.assert_close(pattern.sum(-1), torch.ones(4, 2, 12))
        assert torch.all(pattern.triu(1) == 0)
    rec = compute_internals(model, ps)
    assert rec.attn_share.shape == (4, 2, 2, len(WORD_GROUPS))
    np.testing.assert_allclose(rec.attn_share.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(rec.attn_chance.sum(-1), 1.0, rtol=1e-9)
    assert (rec.attn_distance >= 0).all() and (rec.attn_distance <= 11).all()
    assert (rec.attn_entropy >= 0).all()


def test_attention_statistics_on_hand_made_patterns():
    """Text "ab cd": one head attends uniformly, the other to the previous character."""
    T = 5
    uniform = torch.tril(torch.ones(T, T))
    uniform = uniform / uniform.sum(-1, keepdim=True)
    previous = torch.zeros(T, T)
    previous[0, 0] = 1
    previous[torch.arange(1, T), torch.arange(T - 1)] = 1
    pattern = torch.stack([uniform, previous])[None].double()  # (1 prompt, 2 heads, T, T)
    codes = torch.from_numpy(word_groups("ab cd"))
    groups = torch.stack([(codes == g) for g in range(4)], -1)[None].float()
    got = attention_stats([pattern], groups, torch.tensor([T]))
    entropy, distance, share = got["entropy"][0, 0], got["distance"][0, 0], got["share"][0, 0]
    expected_entropy = (0 + 1 + math.log2(3) + 2 + math.log2(5)) / 5
    assert entropy.tolist() == pytest.approx([expected_entropy, 0.0])
    assert distance.tolist() == pytest.approx([1.0, 0.8])  # mean of i/2; 4 of 5 look one back
    # looking one back: a, b (current word), ' '→b (previous), c→' ' (boundary), d→c (current)
    assert share[1].tolist() == pytest.approx([3 / 5, 1 / 5, 1 / 5, 0.0])
    chance = [
        (1 + 1 + 0 + 1 / 4 + 2 / 5) / 5,
        (1 / 3 + 1 / 4 + 1 / 5) / 5,
        (2 / 3 + 2 / 4 + 2 / 5) / 5,
        0.0,
    ]
    assert got["chance"][0].tolist() == pytest.approx(chance)
    assert share[0].tolist() == pytest.approx(chance)  # uniform attention is chance


@pytest.mark.parametrize(
    "text", ["The cat sat on the mat.", "  x = 1 +\n2", "word", " a  b ", "\n\nab"]
)
def test_word_groups_are_the_saliency_stages_positions_for_every_query(text):
    codes = word_groups(text)
    names = dict(enumerate(WORD_GROUPS))
    for i in range(len(text)):
        assert [names[int(c)] for c in codes[i, : i + 1]] == relative_positions(text[: i + 1])
        assert (codes[i, i + 1 :] == -1).all()


def test_the_residual_stream_kept_every_fourth_position_from_the_last():
    model = tiny(n_layer=2)
    ps = prompt_set(n=3, T=10)
    rec = compute_internals(model, ps)
    assert rec.resid.shape == (3, 3 * 3, 16)  # positions 1, 5, 9 of each prompt
    ids, *_ = ps.tensors()
    _, cache = model.run_with_cache(ids, ["embed", "blocks.1.resid_post"])
    keep = np.arange(9, -1, -RESID_STRIDE)[::-1].copy()
    np.testing.assert_array_equal(rec.resid_prompt, np.repeat([0, 1, 2], 3))
    np.testing.assert_allclose(rec.resid[0][3:6], cache["embed"][1, keep].detach().numpy())
    np.testing.assert_allclose(
        rec.resid[2][6:], cache["blocks.1.resid_post"][2, keep].detach().numpy()
    )


def test_one_forward_pass_per_checkpoint_and_prompt_set(tmp_path, monkeypatch):
    vocab = Vocab.from_texts(["abcdefghij"])
    infos = [
        save_checkpoint(tmp_path / "m", "iter", it, tiny(2, it), vocab, CheckpointMeta())
        for it in (0, 5)
    ]
    calls = []
    real = internals_module.compute_internals
    monkeypatch.setattr(
        internals_module,
        "compute_internals",
        lambda m, p, **kw: calls.append(1) or real(m, p, **kw),
    )
    cache = ActivationCache()
    ps = prompt_set()
    first = internals(infos[0], ps, cache=cache)
    assert internals(infos[0], ps, cache=cache) is first and len(calls) == 1
    internals(infos[0], prompt_set(seed=2), cache=cache)  # other prompts: computed
    assert len(calls) == 2
    both = internals_of(infos, ps, workers=2, cache=cache)
    assert both[0] is first and len(calls) == 3
    assert internals(infos[0], ps) is not first and len(calls) == 4  # no cache: computed
    alone = internals_of(infos, ps, workers=1, cache=ActivationCache())
    for a, b in zip(alone, both, strict=True):  # the worker count changes no number
        np.testing.assert_array_equal(a.lens_loss, b.lens_loss)
        np.testing.assert_array_equal(a.resid, b.resid)


def test_the_cache_keeps_at_most_its_bound_and_travels_empty(tmp_path):
    """Least recently used out first once over ``max_bytes`` (the newest always kept);
    a copy sent to another rank is empty, and each rank keeps its own for the run."""
    vocab = Vocab.from_texts(["abcdefghij"])
    infos = [
        save_checkpoint(tmp_path / "m", "iter", it, tiny(1, it), vocab, CheckpointMeta())
        for it in (0, 1)
    ]
    ps = prompt_set()
    one = internals(infos[0], ps)
    cache = ActivationCache(max_bytes=one.nbytes)  # room for one
    internals(infos[0], ps, cache=cache)
    internals(infos[1], ps, cache=cache)
    assert len(cache) == 1 and cache.nbytes == one.nbytes
    small = ActivationCache(max_bytes=1)  # less than one: the newest stays
    internals(infos[0], ps, cache=small)
    assert len(small) == 1
    sent = pickle.loads(pickle.dumps(cache))
    assert len(sent) == 0 and sent.max_bytes == cache.max_bytes
    local: dict = {}
    job = Job(rank=1, mode="jobs", log=print, local=local)
    here = sent.here(job)
    assert here is not sent and here is pickle.loads(pickle.dumps(cache)).here(job)
    assert cache.here(job) is cache  # on rank 0 the run's own


def test_lens_similarity_and_attention_share_one_forward_pass_per_checkpoint(
    smoke_study, corpora, tmp_path, monkeypatch
):
    """Run again on a copy of the smoke study, the three stages compute each checkpoint's
    internals once and write the same tables."""
    root = smoke_study.copy(tmp_path / "run")
    spec = corpora.smoke()
    calls = []
    real = internals_module.compute_internals
    monkeypatch.setattr(
        internals_module,
        "compute_internals",
        lambda m, p, **kw: calls.append(1) or real(m, p, **kw),
    )
    cache = ActivationCache()  # the run's, as the runner passes it to every stage
    for name in ("lens", "similarity", "attention"):
        stage = spec.stage(name)
        found = [corpora.resolve(n) for n in corpora.names]
        settings = spec.settings(name, corpora=found, offline=True)
        ctx = StageContext(RunDir(root), stage, progress=False, log=lambda m: None)
        ctx.activations = cache
        run_stage(ctx, settings)
        for table in ("per_prompt", "cka", "heads"):
            path = root / stage.name / f"{table}.csv"
            if path.is_file():
                assert (
                    path.read_bytes()
                    == (smoke_study.root / stage.name / f"{table}.csv").read_bytes()
                )
    # 12 history checkpoints and 12 adapted models; the three untrained ones (iteration 0)
    # have the same weights (one seed), so one forward pass serves them all
    run = RunDir(root)
    infos = [c for m in run.model_entries() for c in m.checkpoints]
    infos += [a.checkpoints[-1] for a in run.adapted_models()]
    assert len(infos) == 24
    assert len(calls) == len({c.tensor_sha256 for c in infos}) == 22


def test_rows_of_two_vocabularies_pair_where_both_have_read_the_same_text() -> None:
    """Residual rows are kept every 4th position from the last; two tokenizations of one
    text pair at the rows whose tokens end at the same character, and only for prompts
    whose contexts are the same text."""

    def prompts(items):
        return PromptSet(
            [
                Prompt(i, "c", 0, text, "x", np.zeros(n, dtype=np.int64), 0, 0, lengths)
                for i, (text, n, lengths) in enumerate(items)
            ]
        )

    def rec(ps):  # the rows compute_internals keeps: positions n-1, n-5, ... per prompt
        rows = [np.full(len(range(p.length - 1, -1, -4)), i) for i, p in enumerate(ps.prompts)]
        lengths = np.array([p.length for p in ps.prompts])
        return SimpleNamespace(resid_prompt=np.concatenate(rows), lengths=lengths)

    chars = prompts([("ab cd", 5, None), ("abcdefghi", 9, None), ("xyz", 3, None)])
    tokens = prompts(
        [
            ("ab cd", 3, np.array([2, 1, 2])),  # one row: the token ending at 5
            ("abcdefghi", 6, np.array([1, 4, 1, 1, 1, 1])),  # rows ending at 5 and 9
            ("xyw", 1, np.array([3])),  # another text: never paired
        ]
    )
    # character rows: prompt 0 ends 1, 5 (rows 0, 1); prompt 1 ends 1, 5, 9 (rows 2-4);
    # prompt 2 ends 3 (row 5). Token rows: 5 (row 0); 5, 9 (rows 1, 2); 3 (row 3).
    ra, rb = aligned_rows(rec(chars), chars, rec(tokens), tokens)
    assert ra.tolist() == [1, 3, 4] and rb.tolist() == [0, 1, 2]
