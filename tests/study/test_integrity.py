"""No wrong result accepted: every file whose SHA-256 domaingpt records is checked by
content where it is used (the encoded-corpus cache, a stage's outputs, checkpoint
weights), and one damaged file blocks only what depends on it, with the repair named.

Each test damages a private copy of the shared smoke study (or the cache) and checks
what the next command does: rebuilds or reruns what was damaged and gives the right
numbers back, or refuses with a message naming the fix, keeping every other result.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

from domaingpt.context.rundir import RunDir
from domaingpt.data.encoding import encode_corpus, encoded_path
from domaingpt.model.checkpoint import find_checkpoint, load_checkpoint
from domaingpt.study import run_study


def _run(root: Path, corpora, **kw) -> tuple[dict[str, str], list[str]]:
    log: list[str] = []
    result = run_study(corpora.smoke(), root, progress=False, log=log.append, **kw)
    return {o.stage: o.status for o in result.outcomes}, log


def _digests(root: Path, folder: str) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((root / folder).rglob("*"))
        if p.is_file()
    }


def test_a_corrupted_encoded_corpus_is_rebuilt_and_said(smoke_study, corpora):
    """Issue 26.5: the cache is checked by its SHA-256 (the same length, other ids)."""
    corpus = corpora.resolve("shakespeare")
    vocab = RunDir(smoke_study.root).vocab()
    first = encode_corpus(corpus, vocab)
    whole = first.ids.tobytes()
    path = encoded_path(corpus, vocab)
    stamp = path.stat()
    damaged = path.with_name("damaged.tmp")  # a new file: mappings of the old one stay
    damaged.write_bytes(whole[:-2000] + bytes(2000))  # the validation split's end: <unk>
    os.utime(damaged, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # the same size and time
    os.replace(damaged, path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = encode_corpus(corpus, vocab)
    assert [str(w.message) for w in caught if "encoded corpus cache" in str(w.message)]
    assert "rebuilt" in str(caught[-1].message)
    assert again.ids.tobytes() == whole and path.read_bytes() == whole
    with warnings.catch_warnings(record=True) as caught:  # whole again: silent
        warnings.simplefilter("always")
        encode_corpus(corpus, vocab)
    assert not caught


def test_a_same_size_edit_of_a_stage_output_reruns_the_stage(smoke_study, corpora, tmp_path):
    """Issue 26.6: outputs are compared by SHA-256, not by size."""
    root = smoke_study.copy(tmp_path / "run")
    table = root / "evaluate" / "zero_shot.csv"
    original = table.read_bytes()
    text = original.decode()
    loss = text.splitlines()[1].split(",")[4]
    edited = loss.replace(loss[0], str((int(loss[0]) + 2) % 10), 1)
    table.write_text(text.replace(loss, edited, 1))
    assert table.stat().st_size == len(original) and table.read_bytes() != original
    status, log = _run(root, corpora)
    assert status["evaluate"] == "done", log
    assert any("evaluate" in line and "files missing or changed" in line for line in log)
    assert table.read_bytes() == original  # the real numbers, and the report shows them
    assert edited[:6] not in (root / "report.md").read_text()


def test_a_truncated_final_checkpoint_is_trained_again(smoke_study, corpora, tmp_path):
    """Issue 26.7: checkpoint weights are part of the train stage's outputs; a damaged
    one is written again (resumed from before it), never left as "complete"."""
    root = smoke_study.copy(tmp_path / "run")
    model = root / "models" / "shakespeare"
    final = find_checkpoint(model)
    whole = final.tensor_path.read_bytes()
    final.tensor_path.write_bytes(whole[: len(whole) // 2])
    status, log = _run(root, corpora)
    assert status["train"] == "done", log
    assert any("truncated or altered" in line for line in log), log
    assert final.tensor_path.read_bytes() == whole  # deterministic: the same weights
    load_checkpoint(find_checkpoint(model))
    assert all(s in ("done", "skipped") for s in status.values()), status


def test_a_lost_run_json_blocks_what_needs_it_and_names_the_repair(smoke_study, corpora, tmp_path):
    """Issue 26.14: the train stage names the file and ``--force train``; the stages
    that need it are blocked but keep their results, reused unchanged once the file is
    back; the stages that do not need it stay done."""
    root = smoke_study.copy(tmp_path / "run")
    run_json = root / "models" / "wikipedia" / "run.json"
    saved = run_json.read_bytes()
    run_json.unlink()
    kept = {folder: _digests(root, folder) for folder in ("eval", "adapt", "probe", "quality")}
    status, log = _run(root, corpora)
    assert status["stats"] == "skipped" and status["train"] == "failed"
    message = json.loads((root / "stages" / "train.json").read_text())["message"]
    assert "models/wikipedia/run.json is missing" in message and "--force train" in message
    blocked = [s for s, v in status.items() if v == "blocked"]
    assert len(blocked) == 8
    for stage in blocked:
        record = json.loads((root / "stages" / f"{stage}.json").read_text())
        assert (
            record["kept"]["status"] == "done" and "earlier results are kept" in record["message"]
        )
    assert {f: _digests(root, f) for f in kept} == kept  # finished work left in place
    run_json.write_bytes(saved)  # repaired: nothing is computed again but the report
    status, log = _run(root, corpora)
    assert {s for s, v in status.items() if v != "skipped"} == {"train", "report"}, log
    assert sum("finished earlier with this configuration, skipped" in m for m in log) == 3
    for stage in blocked:
        assert json.loads((root / "stages" / f"{stage}.json").read_text())["status"] == "done"
    assert "(0 missing parts)" in "\n".join(log)


def test_a_truncated_adapted_checkpoint_is_adapted_again(smoke_study, corpora, tmp_path):
    """The adapted models' checkpoints too: the damaged run is redone, the others reused."""
    root = smoke_study.copy(tmp_path / "run")
    damaged = sorted((root / "adapt").rglob("iter-*.safetensors"))[-1]
    whole = damaged.read_bytes()
    damaged.write_bytes(whole[:-100])
    status, log = _run(root, corpora)
    assert status["adapt"] == "done", log
    runs = len(list((root / "adapt").glob("*/*/seed*")))
    assert f"reused {runs - 1} finished adaptation run(s) from {root / 'adapt'}" in log, log
    assert damaged.read_bytes() == whole
