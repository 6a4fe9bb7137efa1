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
import tempfile
import time
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


def _time_engine_steps(engine: KyutaiEngine, batch: int, steps: int, warmup: int = 3) -> float:
    """Seconds per batched step with ``batch`` active slots."""
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
    start = time.perf_counter()
    for _ in range(steps):
        engine.step(sessions)
    elapsed = (time.perf_counter() - start) / steps
    for s in sessions:
        engine.release_session(s)
    return elapsed


def bench_engine(directory: Path, batches: list[int], steps: int) -> list[dict[str, Any]]:
    engine = KyutaiEngine(locate_checkpoint(str(directory)), device="cpu", max_streams=max(batches))
    rows = []
    for batch in batches:
        per_step = _time_engine_steps(engine, batch, steps)
        rows.append(
            {
                "batch": batch,
                "ms_per_step": round(per_step * 1000, 2),
                "steps_per_second": round(1 / per_step, 1),
                "realtime_factor_per_slot": round(1 / per_step / FRAMES_PER_SECOND, 2),
                "realtime_streams": round(batch / per_step / FRAMES_PER_SECOND, 1),
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
            start = time.perf_counter()
            for _ in range(steps):
                mimi.encode(pcm)
            per_frame = (time.perf_counter() - start) / steps
        rows.append(
            {
                "batch": batch,
                "ms_per_frame": round(per_frame * 1000, 2),
                "ms_per_stream_frame": round(per_frame * 1000 / batch, 2),
                "cpu_share_per_stream": round(per_frame / batch * FRAMES_PER_SECOND, 3),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,2,4,8", help="comma-separated batch sizes")
    parser.add_argument("--steps", type=int, default=25, help="timed steps per measurement")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    import torch

    results: dict[str, Any] = {"torch_threads": torch.get_num_threads()}
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
