"""Random-weight Kyutai STT checkpoints, laid out exactly like a published one.

Kyutai's weights are not available offline, so tests and the benchmark build a model
from ``moshi``'s own classes with random weights and save it as ``config.json``, the
LM safetensors, the Mimi safetensors and a sentencepiece tokenizer (trained here on a
few sentences). The engine then loads it through the same code path as real weights.

Two Mimi sizes: ``"tiny"`` (fast enough for unit tests) and ``"real"`` (moshi's
published Mimi architecture, for timing the encoder on this CPU).
"""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import sentencepiece
import torch
from moshi.models import loaders
from moshi.utils.compile import no_compile
from safetensors.torch import save_file

TEXT_CARD = 64
_SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "captions help people follow the meeting",
    "hello everyone and welcome to the weekly call",
    "she sells sea shells by the sea shore",
    "a streaming model emits words with a short delay",
    "numbers like one two three four five six seven",
    "bonjour tout le monde et bienvenue",
]

_TINY_MIMI: dict[str, Any] = {
    "sample_rate": 24000,
    "channels": 1,
    "frame_rate": 12.5,
    "seanet": {
        **loaders._seanet_kwargs,
        "dimension": 32,
        "n_filters": 4,
    },
    "quantizer": {
        "dimension": 16,
        "n_q": 8,
        "bins": 64,
        "input_dimension": 32,
        "output_dimension": 32,
    },
    "transformer": {
        **loaders._transformer_kwargs,
        "d_model": 32,
        "num_heads": 2,
        "num_layers": 1,
        "dim_feedforward": 64,
        "context": 50,
        "input_dimension": 32,
        "output_dimensions": [32],
    },
}


def _tokenizer_bytes(vocab_size: int) -> bytes:
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(_SENTENCES * 4),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="unigram",
        # Kyutai's convention: 0 ends padding (word boundary), 3 is padding.
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=3,
        minloglevel=2,
    )
    return model.getvalue()


def _seed_codebooks(mimi: Any) -> None:
    """Gives fresh (all-zero) codebooks centroids drawn from real encoder outputs.

    Training would do this; without it every frame quantizes to code 0 and the model's
    output could not depend on the audio. Each residual layer gets centroids sampled
    from the residuals it sees on a mix of tones and noise at several levels.
    """
    t = torch.arange(4 * 1920) / 24000
    clips = [
        level * torch.sin(2 * torch.pi * freq * t) + noise * torch.randn_like(t)
        for level in (0.05, 0.3, 0.9)
        for freq in (110.0, 220.0, 440.0, 880.0, 1500.0)
        for noise in (0.0, 0.05, 0.3)
    ]
    audio = torch.stack(clips)[:, None, :]
    with torch.no_grad(), no_compile():
        latent = mimi._encode_to_unquantized_latent(audio)
        for rvq in (mimi.quantizer.rvq_first, mimi.quantizer.rvq_rest):
            residual = rvq.input_proj(latent).transpose(1, 2).reshape(-1, rvq.dimension)
            for layer in rvq.vq.layers:
                book = layer._codebook
                pick = torch.randint(0, residual.shape[0], (book.embedding_sum.shape[0],))
                centroids = residual[pick]
                book.embedding_sum.copy_(centroids * book.cluster_usage[:, None])
                book._initialized.fill_(1.0)
                nearest = torch.cdist(residual, centroids).argmin(dim=1)
                residual = residual - centroids[nearest]


def write_random_checkpoint(
    directory: Path,
    *,
    mimi: str = "tiny",
    dim: int = 64,
    num_layers: int = 2,
    n_q: int = 8,
    audio_delay_seconds: float = 0.48,
    audio_silence_prefix_seconds: float = 0.0,
    extra_heads: int = 0,
    seed: int = 0,
    text_bias: dict[int, float] | None = None,
    stt_config: dict[str, Any] | None = None,
) -> Path:
    """Writes a random-weight STT checkpoint into ``directory``; returns it.

    ``text_bias`` gives the text head a bias (token id to logit offset), so that random
    weights can emit Kyutai-like streams (boundaries ``0``, pieces, padding ``3``)
    instead of pieces only. ``stt_config`` replaces the ``stt_config`` entry
    built from the two seconds arguments (``{}`` leaves it empty, as an old config).
    """
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    if mimi == "tiny":
        mimi_config = copy.deepcopy(_TINY_MIMI)
    elif mimi == "real":
        mimi_config = copy.deepcopy(loaders._mimi_config)
    else:
        raise ValueError(f"unknown mimi size {mimi!r}")
    mimi_config["quantizer"]["n_q"] = max(n_q, mimi_config["quantizer"]["n_q"])
    card = mimi_config["quantizer"]["bins"]
    lm_config: dict[str, Any] = {
        "dim": dim,
        "text_card": TEXT_CARD,
        "existing_text_padding_id": 3,
        "n_q": n_q,
        "dep_q": 0,
        "card": card,
        "num_heads": 4,
        "num_layers": num_layers,
        "hidden_scale": 2,
        "causal": True,
        "context": 200,
        "max_period": 10000,
        "gating": "silu",
        "norm": "rms_norm_f32",
        "positional_embedding": "rope",
        "delays": [0] * (n_q + 1),
        "extra_heads_num_heads": extra_heads,
        "extra_heads_dim": 6,
        **({"bias_proj": True} if text_bias else {}),
    }
    lm = loaders.get_moshi_lm(None, lm_kwargs=lm_config, device="cpu", dtype=torch.float32)
    if text_bias:
        with torch.no_grad():
            lm.text_linear.bias.zero_()
            for token, offset in text_bias.items():
                lm.text_linear.bias[token] = offset
    mimi_model = loaders.get_mimi(None, mimi_config, device="cpu", num_codebooks=n_q)
    _seed_codebooks(mimi_model)
    mimi_state = mimi_model.state_dict()
    save_file(
        {k: v.contiguous() for k, v in lm.state_dict().items()}, directory / "model.safetensors"
    )
    save_file(
        {k: v.contiguous() for k, v in mimi_state.items()},
        directory / "mimi.safetensors",
    )
    (directory / "tokenizer.model").write_bytes(_tokenizer_bytes(TEXT_CARD))
    (directory / "mimi_config.json").write_text(json.dumps(mimi_config))
    config = {
        **lm_config,
        "model_type": "stt",
        "moshi_name": "model.safetensors",
        "mimi_name": "mimi.safetensors",
        "mimi_config_name": "mimi_config.json",
        "tokenizer_name": "tokenizer.model",
        "stt_config": {
            "audio_delay_seconds": audio_delay_seconds,
            "audio_silence_prefix_seconds": audio_silence_prefix_seconds,
        }
        if stt_config is None
        else stt_config,
    }
    (directory / "config.json").write_text(json.dumps(config, indent=1))
    return directory
