"""``domaingpt import-nanogpt``: checkpoints in nanoGPT's exact format become our model.

The checkpoints are written here as nanoGPT's train.py writes them (``torch.save`` of
``model``, ``optimizer``, ``model_args``, ``iter_num``, ``best_val_loss``, ``config``;
a compiled model's ``_orig_mod.`` prefixes; ``meta.pkl`` as its prepare.py pickles it),
with random weights. The logits of the imported model are checked against a plain
forward pass written here over nanoGPT's tensor names, independently of the mapping.
"""

from __future__ import annotations

import builtins
import hashlib
import io
import math
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from domaingpt.context.rundir import RunDir
from domaingpt.data.corpus import resolve_corpus
from domaingpt.errors import DomainGPTError
from domaingpt.interop.nanogpt import _NoClasses, read_meta
from domaingpt.model.checkpoint import find_checkpoint, list_checkpoints, load_checkpoint

pytestmark = pytest.mark.usefixtures("single_thread")

ARGS = {"n_layer": 2, "n_head": 4, "n_embd": 32, "block_size": 48, "dropout": 0.0}


def shakespeare(data_dir: Path) -> str:
    return resolve_corpus("shakespeare", data_dir, download=False).read_text()


def nano_state(args: dict, seed: int) -> dict[str, torch.Tensor]:
    """nanoGPT's ``GPT.state_dict()`` names and shapes, random values (LayerNorm weights
    and biases far from their initial 1 and 0, so a misplaced one shows)."""
    g = torch.Generator().manual_seed(seed)
    V, C, T = args["vocab_size"], args["n_embd"], args["block_size"]

    def rnd(*shape: int, std: float = 0.3, mean: float = 0.0) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * std + mean

    s = {"transformer.wte.weight": rnd(V, C), "transformer.wpe.weight": rnd(T, C)}
    for i in range(args["n_layer"]):
        h = f"transformer.h.{i}."
        for name, (n_out, n_in) in {
            "attn.c_attn": (3 * C, C),
            "attn.c_proj": (C, C),
            "mlp.c_fc": (4 * C, C),
            "mlp.c_proj": (C, 4 * C),
        }.items():
            s[h + name + ".weight"] = rnd(n_out, n_in, std=1 / math.sqrt(n_in))
            if args["bias"]:
                s[h + name + ".bias"] = rnd(n_out, std=0.1)
        for ln in ("ln_1", "ln_2"):
            s[h + ln + ".weight"] = rnd(C, std=0.2, mean=1.0)
            if args["bias"]:
                s[h + ln + ".bias"] = rnd(C, std=0.1)
    s["transformer.ln_f.weight"] = rnd(C, std=0.2, mean=1.0)
    if args["bias"]:
        s["transformer.ln_f.bias"] = rnd(C, std=0.1)
    s["lm_head.weight"] = s["transformer.wte.weight"]  # tied: one storage, two names
    return s


def write_ckpt(
    folder: Path, args: dict, it: int, *, seed: int, compiled: bool = False, name="ckpt.pt"
) -> dict[str, torch.Tensor]:
    """A ``ckpt.pt`` as nanoGPT's train.py saves it; returns the (unprefixed) weights."""
    state = nano_state(args, seed)
    saved = {("_orig_mod." if compiled else "") + k: v for k, v in state.items()}
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "model": saved,
            "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3, "params": [0, 1]}]},
            "model_args": args,
            "iter_num": it,
            "best_val_loss": torch.tensor(2.5 - it / 1000),
            "config": {"dataset": "shakespeare_char", "batch_size": 12, "learning_rate": 1e-3,
                       "max_iters": 500, "compile": compiled, "device": "cpu"},
        },
        folder / name,
    )  # fmt: skip
    return state


def write_meta(path: Path, chars: list[str]) -> dict[str, int]:
    """``meta.pkl`` as nanoGPT's data/shakespeare_char/prepare.py writes it."""
    stoi = {ch: i for i, ch in enumerate(chars)}
    itos = {i: ch for i, ch in enumerate(chars)}
    with open(path, "wb") as f:
        pickle.dump({"vocab_size": len(chars), "itos": itos, "stoi": stoi}, f)
    return stoi


def reference_logits(s: dict[str, torch.Tensor], args: dict, idx: torch.Tensor) -> torch.Tensor:
    """nanoGPT's forward pass written out over its tensor names (all positions)."""
    B, T = idx.shape
    C, H = args["n_embd"], args["n_head"]

    def ln(x, name):
        return F.layer_norm(x, (C,), s[name + ".weight"], s.get(name + ".bias"), 1e-5)

    def lin(x, name):
        return F.linear(x, s[name + ".weight"], s.get(name + ".bias"))

    x = s["transformer.wte.weight"][idx] + s["transformer.wpe.weight"][:T]
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    for i in range(args["n_layer"]):
        h = f"transformer.h.{i}."
        q, k, v = lin(ln(x, h + "ln_1"), h + "attn.c_attn").split(C, dim=2)
        q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(C // H)
        att = att.masked_fill(~mask, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + lin(y, h + "attn.c_proj")
        x = x + lin(F.gelu(lin(ln(x, h + "ln_2"), h + "mlp.c_fc")), h + "mlp.c_proj")
    return ln(x, "transformer.ln_f") @ s["lm_head.weight"].T


def snapshot(root: Path) -> dict[str, str]:
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "/"
        for p in sorted(root.rglob("*"))
    }


def check_logits(model_dir: Path, iteration, state, args, stoi, text: str) -> float:
    loaded = load_checkpoint(find_checkpoint(model_dir, iteration))
    vocab = loaded.vocab
    T = args["block_size"]
    text = text[: 4 * T]
    theirs_ids = torch.tensor([stoi[c] for c in text]).view(4, T)
    ours_ids = torch.tensor(vocab.encode(text).ids.astype("int64")).view(4, T)
    with torch.no_grad():
        ours, _ = loaded.model(ours_ids)
        theirs = reference_logits(state, args, theirs_ids)
    assert ours.shape[-1] == len(stoi) + 1
    assert torch.all(ours[..., 0] == 0)  # <unk>: a zero row, logit exactly 0
    order = [stoi[ch] for ch in vocab.chars]  # nanoGPT's id of each of our ids 1..
    gap = (ours[..., 1:] - theirs[..., order]).abs().max().item()
    assert gap < 1e-5, gap
    return gap


@pytest.mark.parametrize("bias,compiled", [(True, False), (False, True)])
def test_import_gives_nanogpts_logits(tmp_path, data_dir, cli, bias, compiled):
    text = shakespeare(data_dir)
    chars = sorted(set(text))
    args = {**ARGS, "bias": bias, "vocab_size": len(chars)}
    out = tmp_path / "out-shakespeare-char"
    state = write_ckpt(out, args, 500, seed=1, compiled=compiled)
    meta = tmp_path / "meta.pkl"
    stoi = write_meta(meta, chars)
    run = tmp_path / "run"
    code, stdout, err = cli(
        "import-nanogpt", out, "--out", run, "--name", "bard", "--corpus", "shakespeare",
        "--meta", meta, "--data-dir", data_dir, "--offline",
    )  # fmt: skip
    assert code == 0, err
    assert stdout.strip().endswith("(iterations 500)")
    model_dir = run / "models" / "bard"
    check_logits(model_dir, 500, state, args, stoi, text[5000:])
    record = (model_dir / "run.json").read_text()
    assert hashlib.sha256((out / "ckpt.pt").read_bytes()).hexdigest() in record
    assert hashlib.sha256(meta.read_bytes()).hexdigest() in record
    # the analyses read it as any model of the run: its corpus, split and block size
    from domaingpt.context.rundir import RunDir

    entry = RunDir(run).model_entries(["bard"])[0]
    assert (entry.corpus, entry.block_size, entry.val_fraction) == ("shakespeare", 48, 0.1)
    assert RunDir(run).corpus(entry, data_dir=data_dir, download=False).name == "shakespeare"


def test_meta_in_any_order_and_history_by_iter_num(tmp_path, data_dir, cli):
    """ids that are not the sorted characters still map by character; out_dirs and files
    given in any order become one history ordered by iter_num; the corpus's vocabulary
    serves when there is no meta.pkl."""
    text = shakespeare(data_dir)
    chars = sorted(set(text), reverse=True)
    args = {**ARGS, "bias": True, "vocab_size": len(chars)}
    states = {
        250: write_ckpt(tmp_path / "b", args, 250, seed=2),
        0: write_ckpt(tmp_path / "a", args, 0, seed=3, name="first.pt"),
        500: write_ckpt(tmp_path / "c", args, 500, seed=4, compiled=True),
    }
    stoi = write_meta(tmp_path / "b" / "meta.pkl", chars)  # found beside a checkpoint
    run = tmp_path / "run"
    code, stdout, err = cli(
        "import-nanogpt", tmp_path / "c", tmp_path / "a" / "first.pt", tmp_path / "b",
        "--out", run, "--name", "shakespeare", "--data-dir", data_dir, "-q",
    )  # fmt: skip
    assert code == 0, err
    assert stdout.strip().endswith("(iterations 0, 250, 500)")
    model_dir = run / "models" / "shakespeare"
    assert [c.iteration for c in list_checkpoints(model_dir / "checkpoints")] == [0, 250, 500]
    for it, state in states.items():
        check_logits(model_dir, it, state, args, stoi, text[9000:])

    # without meta.pkl: the corpus's sorted characters, as prepare.py numbers them
    state = write_ckpt(tmp_path / "d", args, 100, seed=5)
    code, _, err = cli(
        "import-nanogpt", tmp_path / "d", "--out", run, "--name", "again",
        "--corpus", "shakespeare", "--data-dir", data_dir, "-q",
    )  # fmt: skip
    assert code == 0, err
    plain = {ch: i for i, ch in enumerate(sorted(set(text)))}
    check_logits(run / "models" / "again", 100, state, args, plain, text[100:])

    # --overwrite replaces an imported model whole
    state = write_ckpt(tmp_path / "e", args, 700, seed=9)
    code, _, err = cli(
        "import-nanogpt", tmp_path / "e", "--out", run, "--name", "again", "--overwrite",
        "--corpus", "shakespeare", "--data-dir", data_dir, "-q",
    )  # fmt: skip
    assert code == 0, err
    assert [c.iteration for c in list_checkpoints(run / "models" / "again" / "checkpoints")] == [
        700
    ]
    check_logits(run / "models" / "again", 700, state, args, plain, text[100:])
    assert not [p for p in (run / "models").iterdir() if p.name.startswith(".")]


class _CreatesFile:
    """Unpickling this opens (creates) a file: what a malicious pickle can do."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (builtins.open, (str(self.target), "w"))


def test_bad_inputs_one_error_nothing_written(tmp_path, data_dir, cli, cli_error):
    text = shakespeare(data_dir)
    chars = sorted(set(text))
    args = {**ARGS, "bias": True, "vocab_size": len(chars)}
    write_ckpt(tmp_path / "good", args, 10, seed=6)
    write_meta(tmp_path / "meta.pkl", chars)
    run = tmp_path / "run"
    common = ("--out", run, "--data-dir", data_dir, "--offline", "--corpus", "shakespeare")
    assert cli("import-nanogpt", tmp_path / "good", *common, "--name", "ok", "-q")[0] == 0
    (run / "models" / "notes").mkdir()
    (run / "models" / "notes" / "mine.txt").write_text("not a model")
    before = snapshot(run)
    pwned = tmp_path / "pwned"

    # a meta.pkl that would create a file when unpickled
    evil_meta = tmp_path / "evil_meta.pkl"
    evil_meta.write_bytes(pickle.dumps({"itos": {0: "a"}, "x": _CreatesFile(pwned)}))
    control = tmp_path / "control"  # the same pickle, unpickled for real, creates its file
    pickle.loads(pickle.dumps(_CreatesFile(control))).close()
    assert control.exists()
    err = cli_error(
        "import-nanogpt", tmp_path / "good", *common, "--name", "m", "--meta", evil_meta
    )
    assert "not a plain vocabulary pickle" in err and "GLOBAL" in err
    with pytest.raises(DomainGPTError, match="not a plain"):
        read_meta(evil_meta)
    with pytest.raises(pickle.UnpicklingError, match="refused to import"):  # second guard
        _NoClasses(io.BytesIO(evil_meta.read_bytes())).load()

    # a ckpt.pt that would create a file when unpickled
    evil_ckpt = tmp_path / "evil" / "ckpt.pt"
    evil_ckpt.parent.mkdir()
    torch.save({"model": {}, "model_args": args, "iter_num": 1, "x": _CreatesFile(pwned)},
               evil_ckpt)  # fmt: skip
    err = cli_error("import-nanogpt", evil_ckpt, *common, "--name", "m", "--meta", evil_meta)
    assert "not a plain nanoGPT checkpoint" in err

    # tensor shapes that disagree with model_args
    write_ckpt(tmp_path / "wide", {**args, "n_embd": 48}, 20, seed=7)
    wrong = torch.load(tmp_path / "wide" / "ckpt.pt", weights_only=True)
    wrong["model_args"] = args
    torch.save(wrong, tmp_path / "wide" / "ckpt.pt")
    err = cli_error("import-nanogpt", tmp_path / "wide", *common, "--name", "m")
    assert "does not match its model_args" in err

    # a vocabulary without one of the corpus's characters
    short = tmp_path / "short.pkl"
    write_meta(short, [c for c in chars if c != "z"])
    write_ckpt(tmp_path / "small", {**args, "vocab_size": len(chars) - 1}, 30, seed=8)
    err = cli_error("import-nanogpt", tmp_path / "small", *common, "--name", "m", "--meta", short)
    assert "has no id for 1 character(s) of corpus shakespeare ('z')" in err

    # a vocabulary other than the run's (one character more): the model keeps its own
    wider = tmp_path / "wider.pkl"
    write_meta(wider, sorted([*chars, "é"]))
    write_ckpt(tmp_path / "wider", {**args, "vocab_size": len(chars) + 1}, 40, seed=10)
    other = tmp_path / "other"
    shutil.copytree(run, other)
    code, _, err = cli("import-nanogpt", tmp_path / "wider", *common[2:], "--out", other,
                       "--name", "m", "--meta", wider)  # fmt: skip
    assert code == 0 and "keeps its own" in err
    theirs, ours = RunDir(other).model_vocab("m"), RunDir(other).vocab()
    assert "é" in theirs.chars and "é" not in ours.chars and theirs.size == ours.size + 1

    # an existing model is kept without --overwrite
    err = cli_error("import-nanogpt", tmp_path / "good", *common, "--name", "ok")
    assert "already exists" in err

    # --overwrite replaces only a model directory
    err = cli_error("import-nanogpt", tmp_path / "good", *common, "--name", "notes", "--overwrite")
    assert "did not write there" in err

    # a run directory that does not exist yet is not created by a refused import
    fresh = tmp_path / "fresh"
    cli_error("import-nanogpt", tmp_path / "good", *common[2:], "--out", fresh, "--name", "m",
              "--meta", evil_meta)  # fmt: skip
    assert not fresh.exists()

    assert not pwned.exists()
    assert snapshot(run) == before
    assert not os.path.exists(run / "models" / "m")


def test_study_analyses_models_trained_elsewhere(tmp_path, data_dir):
    """``[study] models``: the train stage imports a nanoGPT history for its corpus (a
    folder of out_dirs with meta.pkl) instead of training, and reads back its losses."""
    from domaingpt.context.rundir import RunDir
    from domaingpt.context.stage import StageContext
    from domaingpt.errors import ConfigError
    from domaingpt.stages import train
    from domaingpt.stages.train.results import imported_from
    from domaingpt.study import load_study

    text = shakespeare(data_dir)
    chars = sorted(set(text))  # a one-corpus study's vocabulary: shakespeare_char's
    args = {**ARGS, "bias": False, "vocab_size": len(chars)}
    states = {
        it: write_ckpt(tmp_path / "ckpts" / f"out-{it}", args, it, seed=it) for it in (100, 200)
    }
    stoi = write_meta(tmp_path / "ckpts" / "meta.pkl", chars)
    study = tmp_path / "study.toml"
    study.write_text(
        '[study]\ncorpora = ["shakespeare"]\nmodels = { shakespeare = "nanogpt:ckpts" }\n'
    )
    spec = load_study(study, preset="smoke")
    assert spec.models == {"shakespeare": f"nanogpt:{tmp_path / 'ckpts'}"}
    settings = spec.settings("train")
    assert settings.key_dict()["models"]["shakespeare"][1]  # the files' digest

    run = RunDir(tmp_path / "run")
    corpus = resolve_corpus("shakespeare", data_dir, download=False)
    ctx = StageContext(run, train.stage, corpora=[corpus], progress=False, log=lambda m: None)
    train.stage.run(ctx, settings)
    model_dir = run.model("shakespeare")
    assert [c.iteration for c in list_checkpoints(model_dir / "checkpoints")] == [100, 200]
    for it, state in states.items():
        check_logits(model_dir, it, state, args, stoi, text[2000:])
    summary = train.stage.read(run)["summary"].set_index("model")
    assert summary.loc["shakespeare", "initial_val_loss"] == pytest.approx(2.4)
    assert summary.loc["shakespeare", "final_val_loss"] == pytest.approx(2.3)
    assert "nanoGPT checkpoints" in imported_from(model_dir)

    # a model directory of another run is copied, checksums verified
    study.write_text(
        f'[study]\ncorpora = ["shakespeare"]\nmodels = {{ shakespeare = "{model_dir}" }}\n'
    )
    run2 = RunDir(tmp_path / "run2")
    ctx2 = StageContext(run2, train.stage, corpora=[corpus], progress=False, log=lambda m: None)
    train.stage.run(ctx2, load_study(study, preset="smoke").settings("train"))
    copied = run2.model("shakespeare")
    check_logits(copied, 200, states[200], args, stoi, text[3000:])
    assert imported_from(copied) == f"a domaingpt model at {model_dir}"

    study.write_text('[study]\ncorpora = ["shakespeare"]\nmodels = { math = "nanogpt:ckpts" }\n')
    with pytest.raises(ConfigError, match="not among the study's corpora"):
        load_study(study, preset="smoke")
