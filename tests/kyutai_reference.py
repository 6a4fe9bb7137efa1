"""An independent reference for Kyutai STT inference, written from Kyutai's published steps.

It follows ``scripts/stt_from_file_pytorch.py`` of ``kyutai-labs/delayed-streams-modeling``
(moshi 0.2.x) step by step, using only ``moshi``'s public classes and none of the
engine's code:

1. ``CheckpointInfo.from_hf_repo`` on the checkpoint files; Mimi, the LM and the
   tokenizer from it; ``LMGen`` with temperatures 0 (greedy).
2. From the checkpoint config: ``stt_config.audio_silence_prefix_seconds`` (default
   1.0), ``stt_config.audio_delay_seconds`` (default 5.0), ``text_padding_token_id``
   (default 3).
3. The audio padded with zeros to whole Mimi frames; ``ceil(prefix * frame_rate)``
   silent frames before it and ``ceil(delay * frame_rate)`` after it.
4. One stream (batch 1): each frame Mimi-encoded, one ``LMGen`` step; the text token is
   ``[0, 0, 0]`` of the output; extra heads (the pause heads) read at ``[0, 0, 0]``.
5. Words from the whole token sequence: segments between ``0`` tokens, text from ids
   above the padding id, times ``max(0, frame / frame_rate - offset)`` with offset
   ``int(prefix_frames / frame_rate) + delay``, several words in a segment shared by
   their piece counts, the last segment cut at EOS or one second after its start.

The one departure: the test model runs in float32 on the CPU (the script uses bf16).
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from moshi.models import LMGen, loaders
from moshi.utils.compile import no_compile


@dataclass
class ReferenceRun:
    tokens: list[int]
    """One text token per frame, prefix and suffix frames included."""
    logits: list[torch.Tensor] = field(default_factory=list)
    """The text logits of each frame (float32, shape [card])."""
    heads: list[list[float]] = field(default_factory=list)
    """Each frame's extra-head probabilities at [0, 0, 0]."""
    prefix_frames: int = 0
    suffix_frames: int = 0
    offset_seconds: float = 0.0
    padding_id: int = 3


@dataclass(frozen=True)
class RefWord:
    text: str
    start: float
    end: float


class Reference:
    """A checkpoint loaded the way Kyutai's script loads it."""

    def __init__(self, directory: Path) -> None:
        config = directory / "config.json"
        raw = json.loads(config.read_text())
        mimi_config = raw.get("mimi_config_name")
        self.info = loaders.CheckpointInfo.from_hf_repo(
            str(directory),
            moshi_weights=directory / raw.get("moshi_name", "model.safetensors"),
            mimi_weights=directory / raw["mimi_name"],
            tokenizer=directory / raw["tokenizer_name"],
            config_path=config,
            # Only the tiny test Mimi needs this; Kyutai's checkpoints use the default.
            mimi_config_path=directory / mimi_config if mimi_config else None,
        )
        self.mimi = self.info.get_mimi(device="cpu")
        self.tokenizer = self.info.get_text_tokenizer()
        self.lm = self.info.get_moshi(device="cpu", dtype=torch.float32)

    def run(self, pcm: np.ndarray) -> ReferenceRun:
        """Transcribes 24 kHz mono ``pcm`` as one stream, like the script's main loop."""
        stt: dict[str, Any] = self.info.stt_config
        prefix_seconds = stt.get("audio_silence_prefix_seconds", 1.0)
        delay_seconds = stt.get("audio_delay_seconds", 5.0)
        padding_id = (self.info.raw_config or {}).get("text_padding_token_id", 3)
        frame = self.mimi.frame_size
        rate = self.mimi.frame_rate
        audio = torch.from_numpy(np.asarray(pcm, dtype=np.float32))[None, None]
        if audio.shape[-1] % frame:
            audio = torch.nn.functional.pad(audio, (0, frame - audio.shape[-1] % frame))
        n_prefix = math.ceil(prefix_seconds * rate)
        n_suffix = math.ceil(delay_seconds * rate)
        silence = torch.zeros(1, 1, frame)
        chunks = (
            [silence] * n_prefix + list(torch.split(audio, frame, dim=-1)) + [silence] * n_suffix
        )
        out = ReferenceRun(
            tokens=[],
            prefix_frames=n_prefix,
            suffix_frames=n_suffix,
            offset_seconds=int(n_prefix / rate) + delay_seconds,
            padding_id=padding_id,
        )
        gen = LMGen(
            self.lm,
            temp=0,
            temp_text=0.0,
            on_text_logits_hook=lambda logits: out.logits.append(logits[0, 0, 0].float().clone()),
        )
        with torch.no_grad(), no_compile(), self.mimi.streaming(1), gen.streaming(1):
            for chunk in chunks:
                codes = self.mimi.encode(chunk)
                stepped = gen.step_with_extra_heads(codes)
                assert stepped is not None, "STT checkpoints have no acoustic delay"
                tokens, heads = stepped
                out.tokens.append(int(tokens[0, 0, 0]))
                out.heads.append([float(h[0, 0, 0]) for h in heads])
        return out

    def words(self, run: ReferenceRun) -> list[RefWord]:
        return reference_words(
            run.tokens,
            decode=lambda ids: str(self.tokenizer.decode(ids)),
            count_pieces=lambda word: len(self.tokenizer.encode(word)),
            eos_id=int(self.tokenizer.eos_id()),
            vocab_size=int(self.tokenizer.vocab_size()),
            frame_rate=float(self.mimi.frame_rate),
            offset_seconds=run.offset_seconds,
            padding_id=run.padding_id,
        )


def reference_words(
    tokens: list[int],
    *,
    decode: Any,
    count_pieces: Any,
    eos_id: int,
    vocab_size: int,
    frame_rate: float,
    offset_seconds: float,
    padding_id: int = 3,
    boundary_id: int = 0,
) -> list[RefWord]:
    """Kyutai's word derivation over a whole token sequence (see the module doc)."""

    def at(position: float) -> float:
        return max(0.0, position / frame_rate - offset_seconds)

    def segment(start: int, end: float) -> list[RefWord]:
        ids = [t for t in tokens[start : math.ceil(end)] if padding_id < t < vocab_size]
        text = decode(ids)
        parts = text.split()
        if len(parts) <= 1:
            return [RefWord(text.strip(), at(start), at(end))] if parts else []
        found = []
        cursor = start
        for part in parts[:-1]:
            n = count_pieces(part)
            found.append(RefWord(part, at(cursor), at(cursor + n)))
            cursor += n
        found.append(RefWord(parts[-1], at(cursor), at(end)))
        return found

    boundaries = [i for i, t in enumerate(tokens) if t == boundary_id]
    if not boundaries:
        return []
    words: list[RefWord] = []
    for left, right in itertools.pairwise(boundaries):
        words += segment(left + 1, right)
    last = boundaries[-1] + 1
    eos = [i for i, t in enumerate(tokens[last:]) if t == eos_id]
    end = last + eos[0] if eos else min(len(tokens), last + frame_rate)
    return words + segment(last, end)
