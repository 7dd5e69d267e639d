"""Everything taken from the study (``shared/seed/nanogpt-domains-study.txt``), in one place.

Numbers are as published; quotations are in the study's own words (lightly trimmed, never
reworded). Stages phrase their claims from these constants and check them against a
run's numbers; nothing else in domaingpt writes a number from the study.

The study trained larger models for far longer (40,000+ iterations), so a claim about an
iteration count can only be tested by a run that gets there; stages say "not measured"
otherwise.
"""

from __future__ import annotations

from types import MappingProxyType

#: The study's three corpora, in its order.
CORPORA = ("shakespeare", "math", "wikipedia")


def _frozen(d: dict) -> MappingProxyType:
    return MappingProxyType(
        {k: MappingProxyType(v) if isinstance(v, dict) else v for k, v in d.items()}
    )


# --- Part 1: corpora -----------------------------------------------------------------

#: "Unique Characters" column of the study's dataset table.
UNIQUE_CHARS = _frozen({"shakespeare": 65, "math": 110, "wikipedia": 292})
MOST_VARIED = "Wikipedia has the most varied characters"
MATH_SYMBOLS = "Math: heavy use of numbers & symbols"
SHAKESPEARE_PLAIN = "Shakespeare: no unusual symbols"

# --- Part 1: training ------------------------------------------------------------------

LOSS_DECREASES = "Loss decreases with training"
#: nanoGPT's README: shakespeare_char on a CPU (not the study; the reference a CPU run is
#: measured against).
NANOGPT_CPU_VAL_LOSS = 1.8857
BEATS_NANOGPT = (
    f"The Shakespeare model beats nanoGPT's CPU recipe (val loss {NANOGPT_CPU_VAL_LOSS})"
)

#: Iterations at which the study saw its samples change, per corpus: (low, high, words).
SPACING = _frozen(
    {
        "shakespeare": (
            100,
            100,
            "Around iteration 100: Spaces introduced between words, though words remained "
            "nonsensical.",
        ),
    }
)
WORDS = _frozen(
    {
        "shakespeare": (800, 1000, "By 800–1000 iterations: Some meaningful words formed."),
        "math": (
            7500,
            7500,
            "Around 7,500 iterations: Noticeable improvement, though spelling errors persisted.",
        ),
        "wikipedia": (3500, 3500, "By 3,500 iterations: Correct word fragments appeared."),
    }
)
#: Loss at which samples became convincing, per corpus: (low, high, words).
COHERENT_LOSS = _frozen(
    {
        "shakespeare": (1.5, 1.6, "Shakespeare: Coherent outputs began around loss ≈ 1.5–1.6."),
        "math": (1.5, 1.6, "Math: Improved around loss ≈ 1.5–1.6 at ~20,000 iterations."),
        "wikipedia": (
            1.0,
            1.1,
            "Wikipedia: Required lower loss (~1.0–1.1) for convincing outputs.",
        ),
    }
)
MATH_SPACING = "Math Model: Slower to learn proper spacing compared to Shakespeare."
WIKI_LOSS = "Wikipedia: Required lower loss (~1.0–1.1) than Shakespeare and Math (≈ 1.5–1.6)"
NOT_REPETITIVE = (
    "Even after 40,000+ iterations, the models did not show signs of repetitive text or "
    "fixed patterns."
)

# --- Part 2: cross-domain --------------------------------------------------------------

#: The study's zero-shot matrix: cross-entropy (nats per character), rows the model,
#: columns the corpus it is evaluated on.
ZERO_SHOT = _frozen(
    {
        "shakespeare": {"shakespeare": 1.3966, "math": 3.9497, "wikipedia": 2.3861},
        "math": {"shakespeare": 3.2619, "math": 1.2258, "wikipedia": 2.5259},
        "wikipedia": {"shakespeare": 2.5144, "math": 2.7195, "wikipedia": 1.3786},
    }
)
OWN_CORPUS_LOWEST = "Each model's loss is lowest on its own corpus"
OWN_MODEL_BEST = "Each corpus is predicted best by the model trained on it"
HARDEST_FOREIGN = (
    "The hardest foreign corpus of each model is the study's (Math for Shakespeare and "
    "Wikipedia, Shakespeare for Math)"
)

#: Few-shot adaptation: "Training each model for 200 additional iterations".
ADAPT_ITERS = 200
PARTIAL_ADAPTATION = (
    "Training each model for 200 additional iterations on a new corpus shows partial adaptation"
)
SHAKESPEARE_SLOW = "Shakespeare model adapted slowly to new domains."
ADAPT_TONE = (
    "Math/Wikipedia models adapted to Shakespeare tone (play-like dialogue) but struggled "
    "with word formation."
)
ADAPT_SYMBOLS = "Wikipedia model picked up mathematical symbols when trained on Math."
ADAPT_STYLE = "The generated samples attempted to capture the new style of the target corpus"
EARLY_EASIER = (
    'Partial training makes adaptation easier (the study: "it is not entirely clear '
    'whether partial training makes adaptation easier")'
)
EARLY_SHIFT = (
    "The partially trained models had not yet fully learned the distribution of their "
    "original corpus, making it comparatively easier for them to shift towards the new "
    "style."
)

# --- Part 3: the softmax output layer ----------------------------------------------------

ENTROPY_FALLS = "The entropy consistently decreases as training progresses"
P_TRUE_RISES = "Models predict the correct next character more reliably as training progresses"
OOD_ENTROPY = "Entropy values are higher for out-of-domain prompts than for in-domain ones"
#: Where probabilities harden: (iteration, "later": True if the study says *after* it).
HARDENING = _frozen(
    {
        "math": (1000, False),
        "shakespeare": (4000, False),
        "wikipedia": (14000, True),
    }
)
HARDENING_WORDS = (
    "The Shakespeare model showed stable probability assignments after roughly 4000 "
    "iterations, while the Math model reached this stage much earlier at around 1000 "
    "iterations. The Wikipedia model was slower and still displayed variability even "
    "after 14,000 iterations"
)
#: Where probabilities harden, one model at a time (the study's sentences, split).
HARDENING_BY_CORPUS = _frozen(
    {
        "math": (
            "The Math model reached this stage [stable probability assignments] much earlier "
            "at around 1000 iterations"
        ),
        "shakespeare": (
            "The Shakespeare model showed stable probability assignments after roughly 4000 "
            "iterations"
        ),
        "wikipedia": (
            "The Wikipedia model was slower and still displayed variability even after "
            "14,000 iterations"
        ),
    }
)
#: The order in which probabilities harden: (earlier corpus, later corpus, the study's words).
HARDENING_ORDER = (
    (
        "math",
        "shakespeare",
        "The Shakespeare model showed stable probability assignments after roughly 4000 "
        "iterations, while the Math model reached this stage much earlier",
    ),
    (
        "shakespeare",
        "wikipedia",
        "The Shakespeare model showed stable probability assignments after roughly 4000 "
        "iterations ... The Wikipedia model was slower",
    ),
)
#: "Shakespeare & Wikipedia models take ~3,000–4,000 iterations before probabilities harden"
P_TRUE_RELIABLE_ITER = 3000
MATH_SPACE = "Math model often mispredicted <space> when given out-of-domain prompts"

# --- Part 4: gradient-based interpretability ----------------------------------------------

VOWELS_HIGHEST = (
    "Vowels consistently receive the highest values, followed by consonants and then "
    "punctuation marks such as <space>"
)
PREVIOUS_WORD = (
    "Characters from the previous word in the input phrase often exhibit stronger gradients"
)
GRADIENTS_SHRINK = (
    "Over time, the model becomes more confident, so the gradient norms shrink toward zero"
)
MATH_DIGITS = "The Math-trained model depends strongly on digits and special symbols"
WIKI_ALPHA = (
    "The Wikipedia-trained model relies heavily on alphabets, <space>, and <newline> tokens"
)
NORM_CAUTION = "A high gradient norm does not always indicate that a token is truly important"
ZERO_FEW_UNCLEAR = (
    "Zero-shot vs few-shot: the expectation was to compare gradient maps between zero-shot "
    "and few-shot settings, but the precise interpretation remains uncertain"
)
#: The two halves of :data:`VOWELS_HIGHEST`, checked apart (vowels first; then consonants
#: before punctuation).
VOWELS_TOP = "Vowels consistently receive the highest values"
CONSONANTS_NEXT = "[Vowels are] followed by consonants and then punctuation marks such as <space>"
GRADIENTS_FOCUS = "Over time, gradient influence becomes more focused as the model learns"
#: The part of :data:`WIKI_ALPHA` a run's character classes can check.
WIKI_SPACE = "The Wikipedia-trained model relies heavily on … <space>"
#: What the deletion test checks, against the study's caution.
TRULY_IMPORTANT = (
    f'The characters an attribution ranks highest are truly important (the study: "{NORM_CAUTION}")'
)

# --- Open questions, answered with analyses the study did not run --------------------------
# Each is a statement this tool can check; the study's own words, where it has some, are
# quoted beside it.

#: The logit lens (each layer's residual read through the final LayerNorm and head).
LENS_DEPTH = "Each domain's model forms its next-character prediction at its own depth"
LENS_MOVES = "The depth at which a model's prediction forms moves with training"
LENS_OOD_LATER = (
    "Out-of-domain prompts resolve later in the model than in-domain ones (the study: "
    '"Out-of-domain prompts introduced confusion, producing flatter distributions")'
)
#: Representation similarity (linear CKA).
SIM_HARDENS = (
    "The representations harden as training progresses: consecutive checkpoints grow more "
    'alike (the study, of the softmax: "Where Probabilities Harden")'
)
SIM_DOMAINS = (
    "Models trained on different domains represent the same text more differently the "
    'deeper the layer (the study: "training data domain directly shapes the style and '
    'behavior of language models")'
)
EARLY_MOVES_MORE = (
    "Adaptation moves the representations of a partially trained model more than those of "
    'a fully trained one (the study: "The partially trained models had not yet fully '
    "learned the distribution of their original corpus, making it comparatively easier "
    'for them to shift towards the new style.")'
)
#: Attention along training.
ATTN_PREVIOUS_WORD = (
    "An attention head reads the previous word more than uniform attention would: a "
    f'mechanism for "{PREVIOUS_WORD}"'
)
ATTN_FOCUS = (
    "Attention becomes more focused as the model learns (the study, of gradients: "
    f'"{GRADIENTS_FOCUS}")'
)
#: Occlusion against the gradient methods.
NORM_HARDER = (
    "After training, gradients typically become small because the model is near "
    "convergence, but this makes it harder to distinguish which tokens are most influential"
)
#: Zero- vs few-shot attributions, answered.
ZERO_FEW_TOWARDS = (
    "Few-shot adaptation moves a model's attributions towards those of the target "
    'domain\'s own model (the study: "the precise interpretation remains uncertain")'
)
ZERO_FEW_SHIFT = (
    "Few-shot adaptation shifts token importance between character classes (the study: "
    '"Additional exploration would be needed to fully understand how examples in the '
    'prompt shift token importance")'
)
