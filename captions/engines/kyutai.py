"""Engine ``kyutai``: Kyutai delayed-streams speech-to-text through ``moshi``, batched.

Loading: ``--model`` is a local directory laid out as Kyutai publishes a checkpoint
(``config.json``, the LM safetensors, the Mimi safetensors, the sentencepiece
tokenizer, all named by ``config.json``), or a Hugging Face repo id (default
``kyutai/stt-1b-en_fr``) resolved from the local Hugging Face cache only. Nothing is
ever downloaded: missing files raise :class:`ModelNotFoundError` naming them and
saying how to provision them. CUDA with bf16 when available, else the CPU in float32.

Batching: the engine owns a fixed pool of ``max_streams`` slots; each speaker takes
one (a full pool refuses with ``CapacityError("no free channels")``; nothing queues).
Mimi and the LM stay in streaming mode with batch size ``max_streams``; every call of
:meth:`KyutaiEngine.step` runs ONE batched Mimi encode and ONE LM step over all slots,
with the slots that have no 80 ms frame ready masked out of execution (their state is
untouched). A slot is reset (Mimi and LM state) the first time a new session uses
it, so speakers never leak state into each other.

Settings from the checkpoint's ``config.json``, read as Kyutai's reference scripts read
them (:class:`SttSettings`): ``stt_config.audio_silence_prefix_seconds`` (default 1.0)
of silence is fed before a stream, ``ceil(stt_config.audio_delay_seconds * 12.5)``
frames of silence (default 5.0 s) after it, ``text_padding_token_id`` (default 3) is
the padding token, and extra head 2 is the end-of-turn ("pause") head when the LM has
at least three extra heads (``extra_heads_num_heads``).

Text and timing: see :mod:`captions.engines.kyutai_text` (Kyutai's reference word
derivation, token by token). A word is final once the boundary after it arrives; the
partial is the segment still open. With a pause head, a probability above
``end_of_turn_threshold`` on a padding frame closes the utterance. Ending a stream
feeds the model the delay's worth of silence (plus ``flush_margin_seconds``, 0 by
default, as the reference) so the last words come out.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from captions.audio import PCM
from captions.engine import AudioInbox, Engine, EngineInfo, Session
from captions.engines import EngineOptions, ModelListing
from captions.engines.kyutai_text import PADDING_ID, WordAssembler
from captions.kyutai_protocol import NEUTRAL_PAUSE_PROBABILITIES, NO_FREE_CHANNELS
from captions.track import CaptionTrack
from common.exceptions import CapacityError, EngineError, ModelNotFoundError

SAMPLE_RATE = 24_000
FRAME_SAMPLES = 1920  # 80 ms: one Mimi frame at 12.5 Hz
DEFAULT_REPO = "kyutai/stt-1b-en_fr"
KNOWN_REPOS = ("kyutai/stt-1b-en_fr", "kyutai/stt-2.6b-en")
PAUSE_HEAD = 2


@dataclass(frozen=True)
class SttSettings:
    """What a Kyutai STT checkpoint's config says about feeding and reading the model."""

    audio_delay_seconds: float
    prefix_frames: int
    """Silent frames fed before the stream (the silence prefix)."""
    suffix_frames: int
    """Silent frames fed after the stream, so the delayed text of its end comes out."""
    offset_seconds: float
    """Subtracted from frame times: prefix and delay, as the reference counts them."""
    padding_id: int
    pause_head: int | None
    """Index of the end-of-turn head among the LM's extra heads, if it has one."""

    @classmethod
    def from_config(
        cls,
        stt_config: dict[str, Any],
        raw_config: dict[str, Any],
        *,
        extra_heads: int,
        frame_rate: float = SAMPLE_RATE / FRAME_SAMPLES,
    ) -> SttSettings:
        # Defaults, rounding and the offset exactly as Kyutai's stt_from_file scripts.
        prefix = float(stt_config.get("audio_silence_prefix_seconds", 1.0))
        delay = float(stt_config.get("audio_delay_seconds", 5.0))
        prefix_frames = math.ceil(prefix * frame_rate)
        return cls(
            audio_delay_seconds=delay,
            prefix_frames=prefix_frames,
            suffix_frames=math.ceil(delay * frame_rate),
            offset_seconds=int(prefix_frames / frame_rate) + delay,
            padding_id=int(raw_config.get("text_padding_token_id", PADDING_ID)),
            # Kyutai's clients (stt_from_file_pytorch --vad, stt-rs, moshi-server users)
            # read head 2 as the pause prediction; it exists only with 3+ heads.
            pause_head=PAUSE_HEAD if extra_heads > PAUSE_HEAD else None,
        )


@dataclass(frozen=True)
class CheckpointFiles:
    """The files of one checkpoint, all present on disk."""

    config: Path
    lm_weights: Path
    mimi_weights: Path
    tokenizer: Path
    mimi_config: Path | None
    name: str


def _provisioning_help(repo: str) -> str:
    return (
        f"On a machine with network access run `huggingface-cli download {repo}`, then copy "
        f"its cache entry (~/.cache/huggingface/hub/models--{repo.replace('/', '--')}) into "
        "this machine's Hugging Face cache (HF_HOME), or copy the files into a directory "
        "and pass it with --model DIR. Models are never downloaded at run time."
    )


def locate_checkpoint(model: str | None) -> CheckpointFiles:
    """Finds a checkpoint on this machine. Raises ModelNotFoundError, never downloads."""
    spec = model or DEFAULT_REPO
    path = Path(spec).expanduser()
    if path.is_dir():
        return _checkpoint_in(path, name=str(path), repo=DEFAULT_REPO)
    if path.exists():
        raise ModelNotFoundError(f"{path}: a Kyutai checkpoint is a directory, not a file")
    if spec.count("/") != 1 or spec.startswith((".", "/", "~")):
        raise ModelNotFoundError(f"{spec}: no such checkpoint directory")
    try:
        from huggingface_hub import snapshot_download

        # local_files_only: the cache is read, the network is never touched.
        snapshot = Path(snapshot_download(repo_id=spec, local_files_only=True))
    except Exception:  # huggingface_hub raises several types for "not cached"
        raise ModelNotFoundError(
            f"Kyutai model {spec} is not in the local Hugging Face cache "
            f"(HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', 'unset')}). "
            "It needs config.json, the LM weights, the Mimi weights and the tokenizer. "
            + _provisioning_help(spec)
        ) from None
    return _checkpoint_in(snapshot, name=spec, repo=spec)


def _checkpoint_in(directory: Path, *, name: str, repo: str) -> CheckpointFiles:
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise ModelNotFoundError(
            f"{directory}: no config.json. A Kyutai checkpoint needs config.json, the LM "
            "weights, the Mimi weights and the sentencepiece tokenizer. " + _provisioning_help(repo)
        )
    try:
        config = json.loads(config_path.read_text())
        wanted = {
            "lm_weights": str(config.get("moshi_name", "model.safetensors")),
            "mimi_weights": str(config["mimi_name"]),
            "tokenizer": str(config["tokenizer_name"]),
        }
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelNotFoundError(f"{config_path}: not a Kyutai STT config ({exc})") from None
    if config.get("mimi_config_name"):
        wanted["mimi_config"] = str(config["mimi_config_name"])
    missing = [f for f in wanted.values() if not (directory / f).is_file()]
    if missing:
        raise ModelNotFoundError(
            f"{directory}: missing {', '.join(missing)} (named by config.json). "
            + _provisioning_help(repo)
        )
    files = {k: directory / v for k, v in wanted.items()}
    return CheckpointFiles(
        config=config_path,
        lm_weights=files["lm_weights"],
        mimi_weights=files["mimi_weights"],
        tokenizer=files["tokenizer"],
        mimi_config=files.get("mimi_config"),
        name=name,
    )


@dataclass(eq=False)
class KyutaiSession(Session):
    slot: int = -1
    assembler: WordAssembler | None = None
    pending: PCM = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    """Audio to feed before the inbox: the silence prefix, then the end-of-stream flush."""
    needs_reset: bool = True
    draining: bool = False
    next_position: int = 0
    pause_probabilities: tuple[float, ...] = NEUTRAL_PAUSE_PROBABILITIES
    steps: int = 0
    recent_tokens: deque[int] = field(default_factory=lambda: deque(maxlen=1024))
    """The last text tokens, for diagnostics (bounded)."""

    def ready(self) -> bool:
        if self.finished:
            return False
        return self.has_control or self.pending.size + self.inbox.available >= FRAME_SAMPLES

    def has_frame(self) -> bool:
        return self.pending.size >= FRAME_SAMPLES or (
            self.pending.size + self.inbox.available >= FRAME_SAMPLES
        )

    def next_frame(self) -> PCM:
        """Takes one frame: pending audio first, then the inbox."""
        frame = self.pending[:FRAME_SAMPLES]
        self.pending = self.pending[FRAME_SAMPLES:]
        if frame.size < FRAME_SAMPLES:
            frame = np.concatenate([frame, self.take_inbox(FRAME_SAMPLES - frame.size)])
        return frame

    def take_inbox(self, samples: int) -> PCM:
        offset, pcm = self.inbox.take(samples)
        if offset > self.next_position and self.assembler is not None:
            # The inbox dropped old audio: keep word times on the real timeline.
            self.assembler.skipped_seconds += (offset - self.next_position) / SAMPLE_RATE
        self.next_position = offset + pcm.size
        return pcm


class KyutaiEngine(Engine):
    def __init__(
        self,
        files: CheckpointFiles,
        *,
        device: str = "auto",
        max_streams: int | None = None,
        end_of_turn_threshold: float = 0.5,
        end_of_turn_head: int | None = None,
        flush_margin_seconds: float = 0.0,
    ) -> None:
        import torch
        from moshi.models import LMGen, loaders
        from moshi.utils.compile import no_compile

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        try:
            checkpoint = loaders.CheckpointInfo.from_hf_repo(
                str(files.config.parent),
                moshi_weights=files.lm_weights,
                mimi_weights=files.mimi_weights,
                tokenizer=files.tokenizer,
                config_path=files.config,
                mimi_config_path=files.mimi_config,
            )
            self._mimi = checkpoint.get_mimi(device=self.device)
            self._lm = checkpoint.get_moshi(device=self.device, dtype=self.dtype)
            self._tokenizer = checkpoint.get_text_tokenizer()
        except (OSError, RuntimeError, ValueError, KeyError, TypeError) as exc:
            raise EngineError(f"cannot load Kyutai checkpoint {files.name}: {exc}") from exc
        if self._lm.fuser is not None or self._lm.dep_q != 0:
            raise EngineError(f"{files.name} is not a Kyutai STT checkpoint (conditioned or Moshi)")
        self.settings = SttSettings.from_config(
            checkpoint.stt_config,
            checkpoint.raw_config or {},
            extra_heads=len(self._lm.extra_heads),
            frame_rate=float(self._mimi.frame_rate),
        )
        self.audio_delay_seconds = self.settings.audio_delay_seconds
        self.prefix_samples = self.settings.prefix_frames * FRAME_SAMPLES
        self.offset_seconds = self.settings.offset_seconds
        margin_frames = math.ceil(flush_margin_seconds * SAMPLE_RATE / FRAME_SAMPLES)
        self.flush_samples = (self.settings.suffix_frames + margin_frames) * FRAME_SAMPLES
        self.padding_id = self.settings.padding_id
        self.end_of_turn_threshold = end_of_turn_threshold
        self.end_of_turn_head = (
            end_of_turn_head
            if end_of_turn_head is not None and end_of_turn_head < len(self._lm.extra_heads)
            else self.settings.pause_head
        )
        if max_streams is None:
            max_streams = 64 if self.device.type == "cuda" else 8
        if max_streams < 1:
            raise EngineError(f"max_streams must be at least 1, got {max_streams}")
        self._gen = LMGen(self._lm, use_sampling=False, support_out_of_sync=True)
        self._torch = torch
        # torch.compile pays off on a GPU server; on a CPU its compile time (and a
        # recompile per shape) costs far more than it saves.
        self._compile_guard = no_compile if self.device.type == "cpu" else contextlib.nullcontext
        self._mimi.streaming_forever(max_streams)
        self._gen.streaming_forever(max_streams)
        self._slots: list[KyutaiSession | None] = [None] * max_streams
        self._vocab_size = int(self._tokenizer.vocab_size())
        self._eos_id = int(self._tokenizer.eos_id())
        self.frames_stepped = 0
        languages = ("en", "fr") if "fr" in files.name.lower() else ("en",)
        self.info = EngineInfo(
            name="kyutai",
            sample_rate=SAMPLE_RATE,
            frame_samples=FRAME_SAMPLES,
            # The silence prefix only delays the start; the lag behind speech is the delay.
            delay_seconds=self.audio_delay_seconds,
            languages=languages,
            max_streams=max_streams,
            model=files.name,
            description=f"Kyutai delayed-streams STT on {self.device.type}, batch {max_streams}",
        )

    # -- sessions ---------------------------------------------------------------------

    def create_session(
        self, track: CaptionTrack, inbox: AudioInbox, *, language: str | None = None
    ) -> KyutaiSession:
        """Takes a free slot. The language is detected by the model itself."""
        try:
            slot = self._slots.index(None)
        except ValueError:
            raise CapacityError(NO_FREE_CHANNELS) from None
        assembler = WordAssembler(
            lambda ids: str(self._tokenizer.decode(ids)),
            lambda word: len(self._tokenizer.encode(word)),
            vocab_size=self._vocab_size,
            frame_rate=SAMPLE_RATE / FRAME_SAMPLES,
            offset_seconds=self.offset_seconds,
            padding_id=self.padding_id,
            eos_id=self._eos_id,
        )
        session = KyutaiSession(
            track=track,
            inbox=inbox,
            language=language,
            slot=slot,
            assembler=assembler,
            pending=np.zeros(self.prefix_samples, dtype=np.float32),
            next_position=inbox.position,
        )
        self._slots[slot] = session
        return session

    def release_session(self, session: Session) -> None:
        if isinstance(session, KyutaiSession) and self._slots[session.slot] is session:
            self._slots[session.slot] = None

    @property
    def free_slots(self) -> int:
        return self._slots.count(None)

    # -- the batched step -------------------------------------------------------------

    def step(self, sessions: Sequence[Session]) -> None:
        mine = [s for s in sessions if isinstance(s, KyutaiSession) and not s.finished]
        for s in mine:
            if s.end_requested and not s.draining:
                self._start_drain(s)
            elif s.flush_requested:
                s.flush_requested = False
                self._close_utterance(s)
        batch = [s for s in mine if s.has_frame()]
        if batch:
            self._run_batch(batch)
        for s in mine:
            if s.draining and not s.has_frame():
                self._close_utterance(s)
                s.end_requested = False
                s.flush_requested = False
                s.finished = True

    def _start_drain(self, s: KyutaiSession) -> None:
        """Queues the rest of the inbox, padded to a frame, then delay + margin of silence."""
        s.draining = True
        pcm = s.take_inbox(s.inbox.available)
        pad = (-(s.pending.size + pcm.size)) % FRAME_SAMPLES
        silence = np.zeros(pad + self.flush_samples, dtype=np.float32)
        s.pending = np.concatenate([s.pending, pcm, silence])

    def _run_batch(self, batch: list[KyutaiSession]) -> None:
        torch = self._torch
        size = len(self._slots)
        pcm = np.zeros((size, 1, FRAME_SAMPLES), dtype=np.float32)
        active = torch.zeros(size, dtype=torch.bool)
        reset = torch.zeros(size, dtype=torch.bool)
        for s in batch:
            pcm[s.slot, 0] = s.next_frame()
            active[s.slot] = True
            if s.needs_reset:
                reset[s.slot] = True
                s.needs_reset = False
        with torch.no_grad(), self._compile_guard():
            if bool(reset.any()):
                self._mimi.reset_streaming(reset.to(self.device))
                self._gen.reset_streaming(reset.to(self.device))
            mask = active.to(self.device)
            self._mimi.set_exec_mask(mask)
            self._gen.set_exec_mask(mask)
            codes = self._mimi.encode(torch.from_numpy(pcm).to(self.device))
            out = self._gen.step_with_extra_heads(codes)
        self.frames_stepped += 1
        if out is None:  # cannot happen with support_out_of_sync; kept for safety
            return
        tokens_out, heads = out
        tokens = tokens_out[:, 0, 0].tolist()
        pauses = [h[:, 0, 0].float().cpu().tolist() for h in heads]
        for s in batch:
            s.steps += 1
            if pauses:
                s.pause_probabilities = tuple(p[s.slot] for p in pauses)
            self._take_token(s, int(tokens[s.slot]))

    def _take_token(self, s: KyutaiSession, token: int) -> None:
        assert s.assembler is not None
        s.recent_tokens.append(token)
        done = s.assembler.push(token)
        s.track.update(commit=done, tail=s.assembler.building)
        head = self.end_of_turn_head
        if (
            head is not None
            and not s.draining
            and token == self.padding_id  # never in the middle of a word
            and len(s.pause_probabilities) > head
            and s.pause_probabilities[head] > self.end_of_turn_threshold
            and (s.assembler.has_text or s.track.is_open)
        ):
            self._close_utterance(s)

    def _close_utterance(self, s: KyutaiSession) -> None:
        assert s.assembler is not None
        s.track.end_utterance(tail=s.assembler.finish())

    def close(self) -> None:
        self._slots = [None] * len(self._slots)


def load(options: EngineOptions) -> KyutaiEngine:
    files = locate_checkpoint(options.model)
    return KyutaiEngine(files, device=options.device, max_streams=options.max_streams)


def available_models() -> list[ModelListing]:
    listings = []
    for repo in KNOWN_REPOS:
        try:
            files = locate_checkpoint(repo)
            listings.append(ModelListing("kyutai", repo, str(files.config.parent), True))
        except ModelNotFoundError:
            listings.append(
                ModelListing(
                    "kyutai",
                    repo,
                    "-",
                    False,
                    f"not in the Hugging Face cache: `huggingface-cli download {repo}` "
                    "on a machine with network, then copy the cache",
                )
            )
    return listings
