"""An exported model in lm-evaluation-harness: ``HFLM.loglikelihood_rolling`` gives our
``evaluate`` loss, and the shipped tasks score the three corpora offline.

lm-eval's rolling windows (``context_len=1``) are disjoint blocks of ``max_length`` =
``block_size`` tokens, our evaluation windows' convention; the one difference is the
first character, which lm-eval predicts from a prefix token. With the prefix set to the
split's first character and the rest as the document, the two are the same sum.
"""

from __future__ import annotations

import importlib
import math
import os
from pathlib import Path

import pytest

from domaingpt.interop.hf import export
from domaingpt.interop.lm_eval_tasks import TAG, TASKS_DIR
from domaingpt.interop.lm_eval_tasks.corpora import split_text
from domaingpt.model.checkpoint import find_checkpoint, load_checkpoint
from domaingpt.scoring import score_windows


def need(module: str):
    """The interop extra is part of ``[dev]``: on CI a missing one fails, elsewhere it skips."""
    if os.environ.get("CI"):
        return importlib.import_module(module)
    return pytest.importorskip(module)


need("transformers")
need("lm_eval")
from lm_eval import simple_evaluate  # noqa: E402
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

CORPORA = ("shakespeare", "math", "wikipedia")
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def offline():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_DATASETS_OFFLINE", "1")
        yield


@pytest.fixture(scope="module")
def exported(smoke_study, tmp_path_factory, offline) -> Path:
    out = tmp_path_factory.mktemp("lm-eval") / "shakespeare"
    export(smoke_study.root / "models" / "shakespeare", out, log=lambda m: None)
    return out


def test_rolling_loglikelihood_equals_our_loss(exported, smoke_study, corpora):
    ours = load_checkpoint(find_checkpoint(smoke_study.root / "models" / "shakespeare"))
    for corpus in CORPORA:
        val = split_text(str(corpora.path(corpus)), 0.1, max_chars=32 * 300 + 17)
        lm = HFLM(
            pretrained=str(exported),
            prefix_token_id=ours.vocab.id_of(val[0]),
            batch_size=64,
            device="cpu",
        )
        assert lm.max_length == 32  # n_positions: windows of block_size
        request = Instance("loglikelihood_rolling", {}, (val[1:],), 0)
        (loglikelihood,) = lm.loglikelihood_rolling([request], disable_tqdm=True)
        scores = score_windows(ours.model, ours.vocab.encode(val).ids, engine="torch")
        assert scores.n_scored == len(val) - 1
        assert -loglikelihood / scores.n_scored == pytest.approx(scores.mean_loss, rel=1e-6)


def test_shipped_tasks_score_our_loss_on_the_real_corpora(exported, smoke_study, data_dir):
    """The shipped tasks read the built-in corpora: their nats per character on the whole
    validation splits equal our loss on the same text within one character's share
    (lm-eval predicts the first from the newline prefix)."""
    ours = load_checkpoint(find_checkpoint(smoke_study.root / "models" / "shakespeare"))
    vocab = ours.vocab
    lm = HFLM(
        pretrained=str(exported), prefix_token_id=vocab.id_of("\n"), batch_size=64, device="cpu"
    )
    manager = TaskManager(include_path=str(TASKS_DIR), metadata={"data_dir": str(data_dir)})
    result = simple_evaluate(model=lm, tasks=[TAG], task_manager=manager)["results"]
    for corpus in CORPORA:
        val = split_text(corpus, 0.1, str(data_dir))
        scores = score_windows(ours.model, vocab.encode(val).ids, engine="torch")
        got = result[f"domaingpt_{corpus}"]
        assert got["nats_per_char,none"] == pytest.approx(
            scores.mean_loss, abs=20 / scores.n_scored
        )
        assert got["bits_per_char,none"] == pytest.approx(
            got["nats_per_char,none"] / math.log(2), rel=1e-12
        )
