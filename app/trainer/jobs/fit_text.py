"""Fitting the text heads of one event type (the declared models of ``kind: text``, such
as ``ticket.category``, ``ticket.urgency`` and ``ticket.sentiment``) that
``app.inference.text`` serves. The heads of a type share one encoder pass, so they fit
together.

Each head is fit by scikit-learn on the sentence embeddings together with TF-IDF
columns of the same text (``fit_lexicon``, ``fit_head``) and kept as plain arrays;
``FittedText.write`` stores them as ``head.safetensors`` and ``vocab.json``.

``fit_all`` also picks the encoder variant the heads serve with: fp32 is the quality
baseline, and the fastest variant whose heads all stay within half an accuracy point
of fp32's on the holdout serves; the heads are those fit on that variant's embeddings,
since embeddings of different variants are not interchangeable. It then fits each
head's TF-IDF-only first stage (``fit_student``) and the cascade's threshold
(``choose_threshold``): the lowest that keeps every head within the gate of the full
model on the holdout.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from app.errors import ConfigError
from app.inference.text import (
    HEAD_FILE,
    LEXICON_OPTIONS,
    VOCAB_FILE,
    Floats,
    Head,
    Lexicon,
    TextSpec,
    softmax,
    texts_of,
)
from schemas import EventCore

if TYPE_CHECKING:
    from app.inference.encoder import Encoder

# First-start training set: 2,000 simulator tickets (1,500 train, 500 holdout). fit_all
# took 47 s on the 2-core dev box (75 s while another job shared the cores): encoding is
# the cost, ~2,000 tickets per variant fit plus ~100 per variant timed.
TRAIN_SIZE = 2_000
DEFAULT_VARIANTS: tuple[str, ...] = ("fp32", "bf16", "int8", "onnx")
GATE = 0.005  # a variant serves only if every head's accuracy is within this of fp32's
GATE_TEXT = "accuracy within 0.5 points of fp32"
SPEED_BATCH = 32  # tickets per call when timing a variant (the service's typical batch)
SPEED_TEXTS = 96  # holdout tickets timed per variant (three batches of 32)
HYBRID_C = 10.0  # embedding + TF-IDF heads (see fit_head)
STUDENT_C = 4.0  # the TF-IDF-only first stage of the cascade
CASCADE_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99)
EMBED_SCALE = 0.5  # weight of the embedding block beside the TF-IDF block
HEAD_C = 1.0  # on standardised embeddings; 0.1-100 measured within ~2 points of each other
LEXICON_MAX_TERMS = 20_000


def fit_lexicon(texts: Sequence[str]) -> Lexicon:
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(min_df=2, max_features=LEXICON_MAX_TERMS, **LEXICON_OPTIONS)
    vectorizer.fit(texts)
    terms = tuple(str(t) for t in vectorizer.get_feature_names_out())
    return Lexicon(terms, np.asarray(vectorizer.idf_, dtype=np.float32))


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

    specs: tuple[TextSpec, ...]
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
    for spec in data.specs:
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


def _split(
    specs: Sequence[TextSpec],
    events: Sequence[EventCore],
    labels: Sequence[Mapping[str, bool | str]],
) -> _Split:
    if not specs or len({spec.text for spec in specs}) != 1:
        raise ValueError("fit_all fits the text models of one type, reading the same fields")
    if len(events) != len(labels):
        raise ValueError(f"{len(events)} events but {len(labels)} label records")
    order = sorted(range(len(events)), key=lambda i: events[i].occurred_at)
    cut = int(len(order) * 0.75)
    if cut < 20 or len(order) - cut < 10:
        raise ValueError(f"need at least 40 labelled tickets to fit and gate, got {len(order)}")
    train_idx, holdout_idx = order[:cut], order[cut:]
    texts = texts_of(events, specs[0].text)
    y_train, y_holdout = {}, {}
    for spec in specs:
        try:
            y_train[spec.name] = [str(labels[i][spec.label]) for i in train_idx]
            y_holdout[spec.name] = [str(labels[i][spec.label]) for i in holdout_idx]
        except KeyError as exc:
            raise ValueError(f"a label record lacks {spec.label!r} for {spec.name}") from exc
    first, last = events[train_idx[0]], events[train_idx[-1]]
    return _Split(
        specs=tuple(specs),
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
    students = {s.name: fit_student(train_lex, data.y_train[s.name]) for s in data.specs}
    student_proba = {
        n: softmax(np.asarray(holdout_lex @ w.T, dtype=np.float32) + b)
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
    specs: Sequence[TextSpec],
    events: Sequence[EventCore],
    labels: Sequence[Mapping[str, bool | str]],
    *,
    variants: Sequence[str] = DEFAULT_VARIANTS,
    on_progress: Callable[[str], None] | None = None,
    compare_all: bool = False,
    cache_dir: Path | None = None,
    with_lexicon: bool = True,
    only: str | None = None,
) -> dict[str, FittedText]:
    """Fit the heads of ``specs`` (text models of one type, reading the same text) and
    choose the encoder variant they serve with.

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
    data = _split(specs, events, labels)
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
    for spec in specs:
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
            spec, chosen.heads[spec.name], metrics, {**params, **spec.params}, data.window
        )
    return fitted
