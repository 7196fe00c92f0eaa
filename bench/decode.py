"""Decode rate: the hand-written pydantic models (baseline) vs the same types compiled
from their declarations in schemas/*.yaml (app.declarations).

    .venv/bin/python bench/decode.py               # ~30 s: 20,000 events per type, best of 5
    .venv/bin/python bench/decode.py --events 2000 --repeat 2 --no-record

Both decode the same valid simulator events (raw JSON bytes, ``model_validate_json``, the
call the pipeline makes), alternating baseline and declared, best of ``--repeat``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from benchlib import REPO, append_results, git_commit
from pydantic import BaseModel

from app.declarations import load_declarations
from app.simulator.generate import generate
from app.simulator.shapes import EVENT_MODELS


def rate(model: type[BaseModel], raws: Sequence[bytes]) -> float:
    started = time.perf_counter()
    for raw in raws:
        model.model_validate_json(raw)
    return len(raws) / (time.perf_counter() - started)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="valid events per type")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)

    declarations, problems = load_declarations(REPO / "schemas")
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1
    raws: dict[str, list[bytes]] = {t: [] for t in EVENT_MODELS}
    for sim in generate(args.events * 4, seed=3, malformed_rate=0.0):
        if len(raws[sim.event_type]) < args.events:
            raws[sim.event_type].append(sim.value)
    rows = []
    for event_type, events in sorted(raws.items()):
        hand = EVENT_MODELS[event_type]
        declared = declarations[event_type].model
        best_hand = best_declared = 0.0
        for _ in range(args.repeat):
            best_hand = max(best_hand, rate(hand, events))
            best_declared = max(best_declared, rate(declared, events))
        rows.append((event_type, len(events), best_hand, best_declared))

    table = [
        "| type | events | hand-written pydantic (baseline) events/s | declared events/s | ratio |",
        "|---|---:|---:|---:|---:|",
    ]
    table += [f"| {t} | {n:,} | {h:,.0f} | {d:,.0f} | {d / h:.2f}x |" for t, n, h, d in rows]
    print("\n".join(table))
    if args.no_record:
        return 0
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    section = (
        f"\n## decode: hand-written models vs declarations — "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC\n\n"
        f"- machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, load average "
        f"before the run {load}\n"
        f"- git commit: {git_commit()}\n"
        f"- workload: `bench/decode.py`, valid simulator events (seed 3), raw JSON bytes "
        f"through `model_validate_json`, alternated, best of {args.repeat}\n\n"
        + "\n".join(table)
        + "\n"
    )
    return append_results(section)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    raise SystemExit(main())
