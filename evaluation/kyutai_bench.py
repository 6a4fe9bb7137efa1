"""Kyutai engine throughput on this machine: ``python -m evaluation.kyutai_bench``.

Measures, on random-weight checkpoints built by :mod:`evaluation.kyutai_checkpoint`
(Kyutai's weights are not available offline; speed does not depend on weight values):

- the batched step (one Mimi encode + one LM step for every slot) of the tiny test
  model, for several batch sizes: steps per second, and the real-time factor per slot
  (a slot needs 12.5 steps per second to keep up with a speaker);
- the Mimi encoder alone with the published Mimi architecture, per stream and per
  80 ms frame, for several batch sizes.

Every step goes through :class:`~captions.engines.kyutai.KyutaiEngine`, the code path
the product runs.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from captions.clock import WallClock
from captions.engine import AudioInbox
from captions.engines.kyutai import FRAME_SAMPLES, SAMPLE_RATE, KyutaiEngine, locate_checkpoint
from captions.events import Speaker
from captions.track import CaptionTrack
from evaluation.kyutai_checkpoint import write_random_checkpoint

FRAMES_PER_SECOND = SAMPLE_RATE / FRAME_SAMPLES  # 12.5


def _timed(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) per call of ``fn``."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - wall) / repeat, (time.process_time() - cpu) / repeat


def _time_engine_steps(
    engine: KyutaiEngine, batch: int, steps: int, warmup: int = 3
) -> tuple[float, float]:
    """(wall, CPU) seconds per batched step with ``batch`` active slots."""
    clock = WallClock()
    sessions = [
        engine.create_session(CaptionTrack(Speaker(f"s{i}"), clock), AudioInbox(SAMPLE_RATE))
        for i in range(batch)
    ]
    rng = np.random.default_rng(0)
    for s in sessions:
        s.inbox.push(
            (0.1 * rng.standard_normal((steps + warmup) * FRAME_SAMPLES)).astype(np.float32)
        )
    for _ in range(warmup):
        engine.step(sessions)
    elapsed = _timed(lambda: engine.step(sessions), steps)
    for s in sessions:
        engine.release_session(s)
    return elapsed


def bench_engine(directory: Path, batches: list[int], steps: int) -> list[dict[str, Any]]:
    engine = KyutaiEngine(locate_checkpoint(str(directory)), device="cpu", max_streams=max(batches))
    rows = []
    for batch in batches:
        wall, cpu = _time_engine_steps(engine, batch, steps)
        rows.append(
            {
                "batch": batch,
                "wall_ms_per_step": round(wall * 1000, 2),
                "cpu_ms_per_step": round(cpu * 1000, 2),
                # Per slot: each step advances every slot by one 80 ms frame.
                "steps_per_second_per_slot": round(1 / cpu, 1),
                "realtime_streams_per_core": round(batch / cpu / FRAMES_PER_SECOND, 1),
            }
        )
    return rows


def bench_mimi(directory: Path, batches: list[int], steps: int) -> list[dict[str, Any]]:
    import torch
    from moshi.models import loaders
    from moshi.utils.compile import no_compile

    files = locate_checkpoint(str(directory))
    info = loaders.CheckpointInfo.from_hf_repo(
        str(directory),
        moshi_weights=files.lm_weights,
        mimi_weights=files.mimi_weights,
        tokenizer=files.tokenizer,
        config_path=files.config,
        mimi_config_path=files.mimi_config,
    )
    mimi = info.get_mimi(device="cpu")
    rows = []
    for batch in batches:
        pcm = 0.1 * torch.randn(batch, 1, FRAME_SAMPLES)
        with torch.no_grad(), no_compile(), mimi.streaming(batch):
            for _ in range(3):
                mimi.encode(pcm)
            wall, cpu = _timed(partial(mimi.encode, pcm), steps)
        rows.append(
            {
                "batch": batch,
                "wall_ms_per_frame": round(wall * 1000, 2),
                "cpu_ms_per_frame": round(cpu * 1000, 2),
                "cpu_ms_per_stream_frame": round(cpu * 1000 / batch, 2),
                # Fraction of one core that encoding one live stream takes.
                "core_share_per_stream": round(cpu / batch * FRAMES_PER_SECOND, 3),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,2,4,8", help="comma-separated batch sizes")
    parser.add_argument("--steps", type=int, default=25, help="timed steps per measurement")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    import torch

    torch.set_num_threads(args.threads)
    results: dict[str, Any] = {"torch_threads": args.threads, "load_average": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        tiny = write_random_checkpoint(Path(tmp) / "tiny")
        results["tiny_engine_step"] = bench_engine(tiny, batches, args.steps)
        real = write_random_checkpoint(Path(tmp) / "real-mimi", mimi="real", n_q=32)
        results["real_mimi_encoder"] = bench_mimi(real, batches, args.steps)
    print(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
