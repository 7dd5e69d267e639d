"""Prompt sets for the softmax and saliency analyses: which text goes into the models.

A prompt is a context of characters plus the *true* next character (the target), and the
corpus it came from. Two kinds:

Validation prompts (the default)
    ``K`` per corpus (the models' training corpora and the run's other corpora, or those
    asked for), drawn deterministically from the corpus's validation split, cut by
    the same rule as training (:meth:`domaingpt.data.EncodedCorpus.split` with the
    ``data.val_fraction`` of the model trained on that corpus): ``K`` windows of ``L``
    characters whose starts are spread evenly over the split, each followed by its true
    next character. The same run always gives the same prompts.
User prompts
    ``--prompt TEXT`` or ``--prompt-file FILE`` (one prompt per line; blank lines are
    skipped). The escapes ``\\n``, ``\\t``, ``\\r`` and ``\\\\`` are decoded, every other
    backslash is kept as typed (so LaTeX like ``\\frac`` survives; write ``\\\\nu`` for a
    literal ``\\nu``). The **last character of a user prompt is its target** and the
    characters before it are the context, so ``"To be or not to be"`` asks how likely
    ``e`` is after ``"To be or not to b"``. Their corpus is ``"user"``.

Every row carries its source corpus, so "in-domain" (the prompt's corpus is the model's
training corpus) is derived per model by :func:`domain_of`, never hand-labelled. Characters
outside the vocabulary and control characters (other than newline, tab and carriage
return) are read as ``<unk>`` and counted (``n_unk``). Contexts longer than the models'
``block_size`` keep their last ``block_size`` characters.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from domaingpt.context.rundir import DEFAULT_VAL_FRACTION, ModelEntry, RunDir
from domaingpt.core.device import pick_device
from domaingpt.core.io import read_user_text
from domaingpt.core.settings import StageSettings, positive, setting
from domaingpt.data.charclass import describe_token
from domaingpt.data.corpus import Corpus, resolve_corpus
from domaingpt.data.encoding import encode_corpus
from domaingpt.data.tokenizer import AnyVocab, is_subword
from domaingpt.data.vocab import UNK, UNK_ID, Vocab
from domaingpt.errors import DomainGPTError

Log = Callable[[str], None]

USER = "user"
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}
_ALLOWED_CONTROLS = frozenset("\n\t\r")


@dataclass(frozen=True)
class Prompt:
    """One context and its true next character."""

    prompt_id: int
    corpus: str  # source corpus name, or "user"
    start: int  # offset of the context in the validation split (-1 for user prompts)
    text: str  # the context as given (unknown characters kept as typed)
    target: str  # the true next character
    ids: np.ndarray  # int64 ids of the context (<unk> for unknown/control characters)
    target_id: int
    n_unk: int  # context + target characters read as <unk>
    #: The characters of ``text`` each id covers (a subword vocabulary's); None: one each.
    lengths: np.ndarray | None = None

    def ends(self) -> np.ndarray:
        """Where in ``text`` the characters of each id end (what has been read there)."""
        if self.lengths is None:
            return np.arange(1, len(self.ids) + 1, dtype=np.int64)
        return np.cumsum(self.lengths, dtype=np.int64)

    def spans(self) -> list[tuple[int, int]]:
        """``(start, end)`` in ``text`` of the characters each id covers."""
        ends = self.ends()
        n = np.ones_like(ends) if self.lengths is None else self.lengths
        return [(int(e - k), int(e)) for e, k in zip(ends, n, strict=True)]

    @property
    def length(self) -> int:
        return len(self.ids)

    @property
    def next_ids(self) -> np.ndarray:
        """The true next id at every position: ``ids[1:]`` then the target."""
        return np.append(self.ids[1:], self.target_id).astype(np.int64)


@dataclass
class PromptSet:
    """The prompts of one analysis and the character frequencies of their corpora."""

    prompts: list[Prompt]
    frequencies: dict[str, np.ndarray] = field(default_factory=dict)  # corpus -> (V,) shares

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def corpora(self) -> list[str]:
        return list(dict.fromkeys(p.corpus for p in self.prompts))

    @property
    def max_length(self) -> int:
        return max((p.length for p in self.prompts), default=0)

    def subset(self, keep: Sequence[int]) -> PromptSet:
        return PromptSet([self.prompts[i] for i in keep], self.frequencies)

    def tensors(
        self, device: torch.device | str = "cpu", index: Sequence[int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(ids, lengths, targets, next_ids)`` for the prompts at ``index`` (all by default).

        Shorter prompts are right-padded with ``<unk>``: the model is causal, so padding
        after a prompt's last position never changes its predictions or gradients.
        ``next_ids`` is ``-1`` on padding.
        """
        chosen = self.prompts if index is None else [self.prompts[i] for i in index]
        T = max(p.length for p in chosen)
        ids = np.full((len(chosen), T), UNK_ID, dtype=np.int64)
        nxt = np.full((len(chosen), T), -1, dtype=np.int64)
        for row, p in enumerate(chosen):
            ids[row, : p.length] = p.ids
            nxt[row, : p.length] = p.next_ids
        lengths = np.array([p.length for p in chosen], dtype=np.int64)
        targets = np.array([p.target_id for p in chosen], dtype=np.int64)
        return (
            torch.from_numpy(ids).to(device),
            torch.from_numpy(lengths).to(device),
            torch.from_numpy(targets).to(device),
            torch.from_numpy(nxt).to(device),
        )

    def frame(self) -> pd.DataFrame:
        """One row per prompt (no ids): prompt_id, corpus, start, length, text, target, ..."""
        return pd.DataFrame(
            {
                "prompt_id": [p.prompt_id for p in self.prompts],
                "corpus": [p.corpus for p in self.prompts],
                "start": [p.start for p in self.prompts],
                "length": [p.length for p in self.prompts],
                "text": [p.text for p in self.prompts],
                "target": [p.target for p in self.prompts],
                "target_label": [describe_token(p.target) for p in self.prompts],
                "n_unk": [p.n_unk for p in self.prompts],
            }
        )


def domain_of(prompt_corpus: str, model_corpus: str) -> str:
    """``"in"`` when the prompt comes from the model's training corpus, ``"user"`` for a
    user prompt, else ``"out"``."""
    if prompt_corpus == USER:
        return USER
    return "in" if prompt_corpus == model_corpus else "out"


def decode_escapes(text: str) -> str:
    """Decode ``\\n``, ``\\t``, ``\\r`` and ``\\\\``; keep any other backslash as typed."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in _ESCAPES:
            out.append(_ESCAPES[text[i + 1]])
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def read_prompt_file(path: str | Path) -> list[str]:
    """The prompts of a file: one per line, escapes decoded, blank lines skipped."""
    path = Path(path)
    text = read_user_text(path, "prompt file")
    lines = [decode_escapes(line) for line in text.splitlines() if line.strip()]
    if not lines:
        raise DomainGPTError(f"prompt file {path} holds no prompt (every line is blank)")
    return lines


def check_not_empty(prompts: Iterable[str]) -> None:
    """Refuse an empty prompt: a prompt is context plus the character to predict."""
    if any(p == "" for p in prompts):
        raise DomainGPTError(
            "a prompt is empty; give at least two characters (context + the character to predict)"
        )


@dataclass(frozen=True)
class PromptSettings(StageSettings):
    """The prompt fields of every stage that reads validation prompts (softmax, saliency and
    the stages of :mod:`domaingpt.context.activations`): the same names, defaults and checks."""

    models: list[str] = setting([], "models to read (default: every trained model)")
    corpora: list[str] = setting([], "prompt corpora, names or paths (default: the models')")
    prompts_per_corpus: int = setting(64, "validation prompts per corpus")
    length: int = setting(64, "prompt length in characters (at most the models' block_size)")

    def check(self) -> None:
        super().check()
        positive("prompts_per_corpus", self.prompts_per_corpus)
        positive("length", self.length)


@dataclass(frozen=True)
class UserPromptSettings(PromptSettings):
    """:class:`PromptSettings` and prompts of the user's own."""

    prompts: list[str] = setting(
        [],
        "a prompt of your own; its last character is the target; \\n, \\t decoded",
        flag="--prompt",
        metavar="TEXT",
        repeat=True,
    )
    prompt_file: str = setting("", "prompts of your own, one per line (as --prompt)", path="input")

    def check(self) -> None:
        super().check()
        check_not_empty(self.prompts)

    def check_study(self, corpora: list[str]) -> None:
        super().check_study(corpora)
        if self.prompt_file:  # read now, not after hours of training
            read_prompt_file(self.prompt_file)


def encode_text(vocab: Vocab, text: str) -> tuple[np.ndarray, int]:
    """Ids of ``text``; unknown characters and control characters become ``<unk>``."""
    ids = vocab.encode(text).ids.astype(np.int64)
    for i, ch in enumerate(text):
        if ch not in _ALLOWED_CONTROLS and unicodedata.category(ch) == "Cc":
            ids[i] = UNK_ID
    return ids, int((ids == UNK_ID).sum())


def user_prompt(vocab: AnyVocab, text: str, prompt_id: int, max_length: int) -> Prompt:
    """A user prompt: context = all but the last token, target = the last token (a
    character, for a character vocabulary); at most ``max_length`` context tokens."""
    check_not_empty([text])
    if is_subword(vocab):
        return _subword_user_prompt(vocab, text, prompt_id, max_length)
    if len(text) < 2:
        raise DomainGPTError(
            f"prompt {text!r} has one character; a prompt needs context plus the character "
            "to predict (its last character)"
        )
    context, target = text[:-1], text[-1]
    if len(context) > max_length:
        context = context[-max_length:]
    ids, n_unk = encode_text(vocab, context + target)
    return Prompt(
        prompt_id=prompt_id,
        corpus=USER,
        start=-1,
        text=context,
        target=target,
        ids=ids[:-1],
        target_id=int(ids[-1]),
        n_unk=n_unk,
    )


def _subword_user_prompt(vocab: AnyVocab, text: str, prompt_id: int, max_length: int) -> Prompt:
    vocab.check_text(text, f"prompt {text!r}")
    enc = vocab.encode(text)
    ids, n_unk, lengths = enc.ids.astype(np.int64), enc.n_unk, enc.lengths
    assert lengths is not None
    if len(ids) < 2:
        raise DomainGPTError(
            f"prompt {text!r} is one token; a prompt needs context plus the token to "
            "predict (its last token)"
        )
    keep = slice(max(len(ids) - 1 - max_length, 0), len(ids) - 1)
    first = int(lengths[: keep.start].sum())
    cut = int(lengths[:-1].sum())
    return Prompt(
        prompt_id=prompt_id,
        corpus=USER,
        start=-1,
        text=text[first:cut],
        target=text[cut:] or vocab.token(int(ids[-1])),
        ids=ids[keep],
        target_id=int(ids[-1]),
        n_unk=n_unk,
        lengths=np.asarray(lengths[keep], dtype=np.int64),
    )


@dataclass(frozen=True)
class _Cut:
    """One vocabulary's reading of a corpus: its ids and where its tokens start."""

    vocab: AnyVocab
    ids: np.ndarray  # the whole corpus's ids
    n_train: int  # ids in the training split
    offset: np.ndarray  # the character each validation id starts at, then the end
    one_each: bool  # one character per id (a character vocabulary)

    def token_at(self, char: np.ndarray) -> np.ndarray:
        """The index in ``ids`` of the (first) token starting at each character."""
        return self.n_train + np.searchsorted(self.offset, char)


def _cuts(corpus: Corpus, vocabs: Sequence[AnyVocab], val_fraction: float) -> list[_Cut]:
    cuts = []
    for vocab in vocabs:
        enc = encode_corpus(corpus, vocab)
        n_train = len(enc.split(val_fraction)[0])
        offset = enc.val_offsets(val_fraction)
        cuts.append(_Cut(vocab, enc.ids, n_train, offset, one_each=enc.lengths is None))
    return cuts


def _common_boundaries(cuts: Sequence[_Cut]) -> np.ndarray:
    """The characters where a token of every vocabulary starts, inside every
    vocabulary's validation split, and the text's end."""
    first = max(int(c.offset[0]) for c in cuts)
    common: np.ndarray | None = None
    for c in cuts:
        # a byte-level piece inside a character covers none: its offset repeats
        own = np.unique(c.offset[c.offset >= first])
        common = own if common is None else np.intersect1d(common, own, assume_unique=True)
    assert common is not None
    return common


def _fit(cuts: Sequence[_Cut], bounds: np.ndarray, first: int, last: int, most: int) -> int:
    """The last common boundary from ``last`` back (after ``first``) at which no
    vocabulary needs more than ``most`` tokens for ``bounds[first]:bounds[last]``."""
    while last > first + 1 and any(
        int(c.token_at(bounds[last]) - c.token_at(bounds[first])) > most for c in cuts
    ):
        last -= 1
    return last


def validation_prompt_sets(
    corpus: Corpus,
    vocabs: Sequence[AnyVocab],
    *,
    per_corpus: int,
    length: int,
    val_fraction: float,
    max_tokens: int | None = None,
) -> list[tuple[list[Prompt], np.ndarray]]:
    """``per_corpus`` prompts from the validation split of ``corpus`` as each of
    ``vocabs`` reads them, and the corpus's id frequencies over each vocabulary (shares
    of the whole text); prompt ids count from 0 in each.

    A prompt is about ``length`` characters of text and the id after them, cut by
    characters: the contexts are the same characters in every vocabulary, from a
    character where a token of each starts to the last such character that ``length``
    characters reach, inside every vocabulary's validation split; the starts are spread
    evenly over those characters. The target is each vocabulary's next token (a
    character, for a character vocabulary), so models with different tokenizers read
    the same text. With one character vocabulary every prompt is ``length`` characters.
    ``max_tokens`` (the models' ``block_size``): a context ends earlier where a
    vocabulary would need more tokens for it (byte-level pieces of a character that is
    several bytes cover no character each).
    """
    cuts = _cuts(corpus, vocabs, val_fraction)
    bounds = _common_boundaries(cuts)
    n_chars = int(bounds[-1]) if len(bounds) else 0
    room = bounds[bounds <= n_chars - length - 1]  # a start whose target exists
    if len(room) == 0:
        raise DomainGPTError(
            f"the validation split of corpus {corpus.name!r} is too short for prompts of "
            f"{length} characters; use a smaller --length"
        )
    pick = np.unique(np.linspace(0, len(room) - 1, per_corpus).round().astype(np.int64))
    starts = room[pick]
    where = np.searchsorted(bounds, starts + length, side="right") - 1
    at = np.searchsorted(bounds, starts)  # at least one token in every vocabulary
    ends = np.clip(np.maximum(where, at + 1), None, len(bounds) - 2)
    if max_tokens is not None:
        ends = np.array(
            [_fit(cuts, bounds, i, e, max_tokens) for i, e in zip(at, ends, strict=True)]
        )
    ends = bounds[ends]
    ranges = [(int(a), int(b)) for a, b in zip(starts, ends, strict=True)]
    longest = max(int(np.max(np.diff(c.offset))) for c in cuts)  # one target's characters
    texts = _text_windows(corpus, [(a, b + longest) for a, b in ranges])
    out = []
    for cut in cuts:
        first, last = cut.token_at(starts), cut.token_at(ends)
        n_val = len(cut.ids) - cut.n_train
        target_end = cut.offset[np.minimum(last - cut.n_train + 1, n_val)]
        unk = cut.vocab.unk_id
        prompts = []
        for j, (a, b, s, e, t, chars) in enumerate(
            zip(starts, ends, first, last, target_end, texts, strict=True)
        ):
            window = np.asarray(cut.ids[s : e + 1], dtype=np.int64)
            lengths = None
            if not cut.one_each:
                lengths = np.diff(cut.offset[s - cut.n_train : e - cut.n_train + 1])
            prompts.append(
                Prompt(
                    prompt_id=j,
                    corpus=corpus.name,
                    start=int(s - cut.n_train),
                    text=chars[: b - a],
                    target=chars[b - a : t - a] or cut.vocab.token(int(window[-1])),
                    ids=window[:-1],
                    target_id=int(window[-1]),
                    n_unk=int((window == unk).sum()) if unk is not None else 0,
                    lengths=lengths,
                )
            )
        out.append((prompts, char_frequencies(cut.ids, cut.vocab.size)))
    return out


def validation_prompts(
    corpus: Corpus,
    vocab: AnyVocab,
    *,
    per_corpus: int,
    length: int,
    val_fraction: float,
    first_id: int = 0,
) -> tuple[list[Prompt], np.ndarray]:
    """:func:`validation_prompt_sets` for one vocabulary, ids from ``first_id``."""
    [(prompts, freq)] = validation_prompt_sets(
        corpus, [vocab], per_corpus=per_corpus, length=length, val_fraction=val_fraction
    )
    return [replace(p, prompt_id=first_id + p.prompt_id) for p in prompts], freq


def char_frequencies(ids: np.ndarray, vocab_size: int, chunk: int = 1 << 24) -> np.ndarray:
    """Share of each id in ``ids`` (counted chunk by chunk: ``ids`` may be a large memmap)."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    for lo in range(0, len(ids), chunk):
        counts += np.bincount(
            np.asarray(ids[lo : lo + chunk], dtype=np.int64), minlength=vocab_size
        )
    return counts / max(int(counts.sum()), 1)


def _text_windows(corpus: Corpus, ranges: list[tuple[int, int]]) -> list[str]:
    """The characters ``text[a:b]`` of each (sorted) range, reading the corpus in chunks."""
    chunks = corpus.iter_text() if hasattr(corpus, "iter_text") else iter([corpus.read_text()])
    out = [""] * len(ranges)
    offset = 0
    for chunk in chunks:
        end = offset + len(chunk)
        for i, (a, b) in enumerate(ranges):
            if a < end and b > offset:
                out[i] += chunk[max(a - offset, 0) : b - offset]
        offset = end
        if ranges and offset >= ranges[-1][1]:
            break
    return out


# --- the models of a run -------------------------------------------------------------


def resolve_prompt_corpora(
    run: RunDir,
    models: Sequence[ModelEntry],
    names: Sequence[str],
    data_dir: str | Path | None,
    log: Log,
    *,
    optional: Sequence[str] = (),
    download: bool = True,
) -> list[Corpus]:
    """The corpora to draw prompts from: ``names`` (built-in names, file paths, or the
    names of the run's models), by default the models' training corpora (found by
    :meth:`RunDir.corpus`, a user's file from its recorded path) plus the ``optional``
    ones (the run's other corpora; skipped with a note when they cannot be found). A
    given text whose checksum differs from the one a model was trained on is flagged."""
    trained = set(run.trained_models())

    def find(name: str) -> Corpus:
        if name in trained and not Path(name).is_file():  # a model's name: its corpus
            return run.corpus(name, data_dir=data_dir, download=download, corpora_option=True)
        return run.known_corpus(resolve_corpus(name, data_dir, download=download))

    corpora: dict[str, Corpus] = {}
    given = [n for n in names if n]
    for name in given:
        try:
            corpus = find(name)
        except DomainGPTError as e:
            raise DomainGPTError(
                f"cannot find corpus {name!r} to draw prompts from ({e}); "
                "pass its file with --corpora PATH"
            ) from None
        for m in models:
            if m.corpus == corpus.name and m.corpus_sha256 and m.corpus_sha256 != corpus.sha256:
                log(
                    f"warning: corpus {corpus.name!r} at {corpus.path} is not the text model "
                    f"{m.name!r} was trained on (checksum differs)"
                )
        corpora.setdefault(corpus.name, corpus)
    if given:
        return list(corpora.values())
    for m in models:
        if m.corpus not in corpora:
            corpora[m.corpus] = run.corpus(
                m, data_dir=data_dir, download=download, corpora_option=True
            )
    for name in optional:
        if name in corpora:
            continue
        try:
            corpora[name] = find(name)
        except DomainGPTError as e:
            log(f"note: no prompts from corpus {name!r} ({e})")
    return list(corpora.values())


@dataclass
class PromptGroup:
    """The models of a run that read one vocabulary, and the prompts as it reads them.

    A run whose models read different vocabularies (a character model beside a GPT-2
    tokenizer's) has one group per vocabulary: the same characters of every corpus,
    each group's prompts numbered after the previous group's, so a ``prompt_id`` names
    one tokenization of one text everywhere."""

    models: list[ModelEntry]
    vocab: AnyVocab
    prompts: PromptSet


def tokenizations(groups: Sequence[PromptGroup]) -> str:
    """What a stage's summary line adds for a run whose models read several
    vocabularies ('' for one)."""
    if len(groups) < 2:
        return ""
    return f" in each of {len(groups)} vocabularies"


def build_prompt_set(
    run: RunDir,
    models: Sequence[ModelEntry],
    vocab: AnyVocab,
    **options: Any,
) -> PromptSet:
    """Validation prompts of every corpus plus the user's prompts (see module docstring),
    in ``vocab``; ``options`` as :func:`build_prompt_groups` takes them."""
    return _build(run, models, [vocab], **options)[0]


def build_prompt_groups(
    run: RunDir, models: Sequence[ModelEntry], **options: Any
) -> list[PromptGroup]:
    """The prompts of :func:`build_prompt_set` in the vocabulary of each model, one group
    per vocabulary (in the order of ``models``)."""
    vocabs: dict[str, AnyVocab] = {}
    members: dict[str, list[ModelEntry]] = {}
    for m in models:
        vocab = run.model_vocab(m.name)
        vocabs.setdefault(vocab.fingerprint, vocab)
        members.setdefault(vocab.fingerprint, []).append(m)
    sets = _build(run, models, list(vocabs.values()), **options)
    return [
        PromptGroup(members[fp], vocab, ps)
        for (fp, vocab), ps in zip(vocabs.items(), sets, strict=True)
    ]


def _build(
    run: RunDir,
    models: Sequence[ModelEntry],
    vocabs: Sequence[AnyVocab],
    *,
    per_corpus: int = 64,
    length: int = 64,
    corpora: Sequence[str] = (),
    prompts: Sequence[str] = (),
    prompt_file: str = "",
    data_dir: str | Path | None = None,
    log: Log = print,
    download: bool = True,
) -> list[PromptSet]:
    """One prompt set per vocabulary, of the same characters.

    The corpora are ``corpora``, by default the models' training corpora and the other
    corpora of the run's vocabulary (so a run with one model still gets out-of-domain
    prompts). ``length`` is clipped to the smallest ``block_size`` among ``models`` (with
    a note); ``per_corpus=0`` gives user prompts only.
    """
    if per_corpus < 0 or length < 1:
        raise DomainGPTError(
            f"prompts per corpus must be >= 0 and length >= 1, got {per_corpus} and {length}"
        )
    block = min(m.block_size for m in models)
    if length > block and per_corpus > 0:
        log(f"note: prompt length {length} exceeds the models' block_size {block}; using {block}")
        length = block
    texts = [decode_escapes(p) for p in prompts]
    check_not_empty(texts)
    if prompt_file:
        texts += read_prompt_file(prompt_file)

    out: list[list[Prompt]] = [[] for _ in vocabs]
    freqs: list[dict[str, np.ndarray]] = [{} for _ in vocabs]
    if per_corpus > 0:
        val_fraction = {m.corpus: m.val_fraction for m in models}
        found = resolve_prompt_corpora(
            run, models, corpora, data_dir, log, optional=run.vocab_corpora(), download=download
        )
        for corpus in found:
            sets = validation_prompt_sets(
                corpus,
                vocabs,
                per_corpus=per_corpus,
                length=length,
                val_fraction=val_fraction.get(corpus.name, DEFAULT_VAL_FRACTION),
                max_tokens=block,
            )
            for k, (got, freq) in enumerate(sets):
                out[k] += got
                freqs[k][corpus.name] = freq
    for k, vocab in enumerate(vocabs):
        out[k] += [user_prompt(vocab, text, 0, block) for text in texts]
    if not out[0]:
        raise DomainGPTError("no prompts: give --prompts-per-corpus > 0 or a --prompt")
    for vocab, got in zip(vocabs, out, strict=True):
        n_unk = sum(p.n_unk for p in got)
        if n_unk and not is_subword(vocab):
            log(
                f"note: {n_unk} prompt character(s) outside the vocabulary or control "
                f"characters are read as {UNK}"
            )
    first = np.cumsum([0] + [len(got) for got in out])
    return [
        PromptSet([replace(p, prompt_id=int(n + i)) for i, p in enumerate(got)], f)
        for n, got, f in zip(first, out, freqs, strict=False)
    ]


def prepare_prompt_stage(
    run: RunDir, settings: PromptSettings, log: Callable[[str], None] = print
) -> tuple[list[PromptGroup], torch.device]:
    """What every prompt-reading stage starts from: the selected models in groups of one
    vocabulary, each with its prompt set (with the user's own when ``settings`` has
    them), and the device."""
    own = settings if isinstance(settings, UserPromptSettings) else None
    groups = build_prompt_groups(
        run,
        run.model_entries(settings.models),
        per_corpus=settings.prompts_per_corpus,
        length=settings.length,
        corpora=settings.corpora,
        prompts=own.prompts if own else (),
        prompt_file=own.prompt_file if own else "",
        data_dir=settings.data_dir or None,
        log=log,
        download=not settings.offline,
    )
    return groups, pick_device(settings.device)
