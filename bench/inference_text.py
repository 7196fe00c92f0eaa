"""Ticket text encoder variants: speed and quality side by side, fp32 the baseline.

For each variant (fp32, bf16, int8, onnx, whichever loads here): load time (the ONNX
export included, into a fresh cache folder), tickets/s at batch 1 and batch 32 on fresh
simulator tickets, embedding cosine against fp32 (mean / min), and the accuracy of heads
fit on that variant's own embeddings of 1,500 training tickets, measured on the fresh
ones. A TF-IDF + logistic regression row (the first ticket models' recipe) is the
non-neural reference for accuracy.

    .venv/bin/python bench/inference_text.py [--n 512] [--threads 1]

Prints a Markdown table; it does not write RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from benchlib import shipped_catalog

from app.errors import ConfigError
from app.inference import encoder as enc
from app.inference import text
from app.simulator.generate import training_set
from app.trainer.jobs import fit_text

# The ticket's text models as schemas/ticket.yaml declares them.
SPECS = [text.TextSpec.of(m) for m in shipped_catalog().values() if m.family == "text"]

TRAIN_N = 1500
BATCH_1_TEXTS = 64


def _rate(encoder: enc.Encoder, texts: list[str], batch: int) -> float:
    encoder.embed(texts[:batch])  # warm-up: first-call allocations
    start = time.perf_counter()
    for i in range(0, len(texts), batch):
        encoder.embed(texts[i : i + batch])
    return len(texts) / (time.perf_counter() - start)


def _tfidf_accuracy(
    train: list[str], test: list[str], y_train: dict[str, list[str]], y_test: dict[str, list[str]]
) -> list[float]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    out = []
    for spec in SPECS:
        model = Pipeline(
            [
                ("tfidf", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)),
                ("clf", LogisticRegression(max_iter=1000, C=4.0)),
            ]
        )
        model.fit(train, y_train[spec.name])
        out.append(float(np.mean(model.predict(test) == np.asarray(y_test[spec.name]))))
    return out


def run_text_bench(n: int = 512, threads: int | None = None) -> list[str]:
    """Markdown lines: one row per variant, the TF-IDF reference row last."""
    if threads is not None:
        enc.configure_threads(threads)
    train_events, train_labels = training_set("ticket", TRAIN_N, seed=1)
    test_events, test_labels = training_set("ticket", n, seed=2)
    train = text.texts_of(train_events, SPECS[0].text)
    test = text.texts_of(test_events, SPECS[0].text)
    y_train = {s.name: [str(lb[s.label]) for lb in train_labels] for s in SPECS}
    y_test = {s.name: [str(lb[s.label]) for lb in test_labels] for s in SPECS}
    cache = Path(tempfile.mkdtemp(prefix="arbiter-bench-onnx-"))

    lines = [
        f"Ticket encoder variants: {n} fresh simulator tickets (seed 2), heads fit on "
        f"{TRAIN_N} (seed 1); torch threads: {threads or 'default'} of {_cores()} cores.",
        "",
        "Accuracy: served heads (embedding + TF-IDF) / heads on the embedding alone.",
        "",
        "| variant | load s | tickets/s b1 | tickets/s b32 | cosine vs fp32 mean / min "
        "| category acc | urgency acc | sentiment acc |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lexicon = fit_text.fit_lexicon(train)
    lex_train, lex_test = lexicon.transform(train), lexicon.transform(test)
    reference: np.ndarray | None = None
    for variant in enc.VARIANTS:
        start = time.perf_counter()
        try:
            encoder = enc.get_encoder(variant, cache_dir=cache)
        except ConfigError as exc:
            lines.append(f"| {variant} | failed: {exc} | | | | | | |")
            continue
        load_s = time.perf_counter() - start
        b1 = _rate(encoder, test[:BATCH_1_TEXTS], 1)
        b32 = _rate(encoder, test, 32)
        x_test = encoder.embed(test)
        x_train = encoder.embed(train)
        if reference is None:
            reference = x_test
        cosine = (x_test * reference).sum(axis=1)
        accuracy = []
        for spec in SPECS:
            truth = np.asarray(y_test[spec.name])
            served = fit_text.fit_head(x_train, y_train[spec.name], lexicon, lex_train)
            alone = fit_text.fit_head(x_train, y_train[spec.name])
            hit = np.asarray(served.classes)[served.logits(x_test, lex_test).argmax(axis=1)]
            hit_alone = np.asarray(alone.classes)[alone.logits(x_test).argmax(axis=1)]
            accuracy.append(
                f"{float(np.mean(hit == truth)):.3f} / {float(np.mean(hit_alone == truth)):.3f}"
            )
        lines.append(
            f"| {variant} | {load_s:.1f} | {b1:.0f} | {b32:.0f} | "
            f"{cosine.mean():.5f} / {cosine.min():.5f} | " + " | ".join(accuracy) + " |"
        )
    tfidf = _tfidf_accuracy(train, test, y_train, y_test)
    lines.append(
        "| TF-IDF + LR (reference) | — | — | — | — | "
        + " | ".join(f"{a:.3f}" for a in tfidf)
        + " |"
    )
    return lines


def _cores() -> int:
    return os.cpu_count() or 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=512, help="fresh tickets timed and scored")
    parser.add_argument("--threads", type=int, default=None, help="torch/ORT intra-op threads")
    args = parser.parse_args()
    for line in run_text_bench(args.n, args.threads):
        print(line)
