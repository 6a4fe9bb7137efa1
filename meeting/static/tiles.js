// Video tiles: one per participant, with name, mute state, video, and an outline while
// they speak (the audio level of their stream). The tiles' DOM lives here; who is muted
// and who we are come from the store.

import { SpeakerColours } from "./captions.js";
import { role } from "./dom.js";
import { onLanguageChange, t } from "./i18n.js";
import { current, onChange } from "./store.js";

const SPEAKING_THRESHOLD = 0.02;
const SPEAKING_HOLD_MS = 700;

/** One colour per speaker on the whole page: tiles, captions and transcript agree. */
export const colours = new SpeakerColours();

const participants = new Map(); // identity -> {info, tile, video, avatar, name, muted, local, audio, meter}
let audioContext = null;
let speakingTimer = null;

function isYou(identity) {
  return identity !== undefined && identity === current().you?.identity;
}

export function upsertParticipant(info, { local = isYou(info?.identity) } = {}) {
  if (!info?.identity) return;
  let entry = participants.get(info.identity);
  if (!entry) {
    const tile = document.createElement("li");
    tile.className = "tile";
    tile.dataset.testid = "tile";
    tile.dataset.identity = info.identity;
    tile.dataset.video = "off";
    tile.dataset.color = String(colours.slot(info.identity));
    const video = document.createElement("video");
    video.autoplay = true;
    video.playsInline = true;
    video.muted = true;
    video.setAttribute("aria-hidden", "true");
    const avatar = document.createElement("div");
    avatar.className = "avatar";
    avatar.setAttribute("aria-hidden", "true");
    const label = document.createElement("span");
    label.className = "tile-name";
    const name = document.createElement("span");
    const muted = document.createElement("span");
    muted.className = "tile-muted";
    label.append(name, muted);
    tile.append(video, avatar, label);
    role("video-grid").append(tile);
    entry = { info, tile, video, avatar, name, muted, local, audio: null, meter: null, speakingUntil: 0 };
    participants.set(info.identity, entry);
  }
  entry.info = { ...entry.info, ...info };
  const display = entry.info.name || entry.info.identity;
  entry.tile.dataset.name = display;
  entry.name.textContent = entry.local ? t("meeting.you", { name: display }) : display;
  entry.avatar.textContent = display.slice(0, 1).toUpperCase();
  entry.avatar.style.background = `var(--spk-${entry.tile.dataset.color})`;
  const audioMuted = entry.local ? current().micMuted : Boolean(entry.info.audio?.muted) || !entry.info.audio?.published;
  entry.muted.textContent = audioMuted ? `(${t("meeting.muted")})` : "";
  if (!entry.local && entry.info.video && (!entry.info.video.published || entry.info.video.muted)) {
    entry.tile.dataset.video = "off";
  }
}

export function removeParticipant(identity) {
  const entry = participants.get(identity);
  if (!entry) return;
  entry.meter?.close();
  entry.audio?.remove();
  entry.tile.remove();
  participants.delete(identity);
}

/** Removes every tile, or every tile but our own (`keepYou`, while reconnecting). */
export function removeParticipants({ keepYou = false } = {}) {
  for (const identity of [...participants.keys()]) if (!(keepYou && isYou(identity))) removeParticipant(identity);
}

/** Our own tile shows our local stream. */
export function attachLocal() {
  const { you, displayName, localStream } = current();
  upsertParticipant({ ...you, name: you.name || displayName }, { local: true });
  const entry = participants.get(you.identity);
  const hasVideo = localStream.getVideoTracks().length > 0;
  entry.video.srcObject = hasVideo ? localStream : null;
  entry.tile.dataset.video = hasVideo ? "on" : "off";
  entry.meter?.close();
  entry.meter = localStream.getAudioTracks().length ? levelMeter(localStream) : null;
}

export function attachTrack({ identity, name, kind, track }) {
  if (!participants.has(identity)) upsertParticipant({ identity, name });
  const entry = participants.get(identity);
  const stream = new MediaStream([track]);
  if (kind === "video") {
    entry.video.srcObject = stream;
    entry.tile.dataset.video = "on";
    track.addEventListener("mute", () => (entry.tile.dataset.video = "off"));
    track.addEventListener("unmute", () => (entry.tile.dataset.video = "on"));
  } else {
    if (!entry.audio) {
      entry.audio = document.createElement("audio");
      entry.audio.autoplay = true;
      entry.tile.append(entry.audio);
    }
    entry.audio.srcObject = stream;
    entry.meter?.close();
    entry.meter = levelMeter(stream);
  }
}

export function detachTrack({ identity, kind }) {
  const entry = participants.get(identity);
  if (!entry) return;
  if (kind === "video") {
    entry.video.srcObject = null;
    entry.tile.dataset.video = "off";
  } else {
    entry.meter?.close();
    entry.meter = null;
  }
}

// ---- audio levels (the active speaker, the join screen's meter)

export function ensureAudioContext() {
  if (!audioContext) {
    try {
      audioContext = new AudioContext();
    } catch {
      audioContext = null;
    }
  }
  audioContext?.resume?.();
  return audioContext;
}

export function levelMeter(stream) {
  const context = ensureAudioContext();
  if (!context) return null;
  const source = context.createMediaStreamSource(stream);
  const analyser = context.createAnalyser();
  analyser.fftSize = 1024;
  source.connect(analyser);
  const samples = new Float32Array(analyser.fftSize);
  return {
    level() {
      analyser.getFloatTimeDomainData(samples);
      let sum = 0;
      for (const s of samples) sum += s * s;
      return Math.sqrt(sum / samples.length);
    },
    close() {
      source.disconnect();
    },
  };
}

function updateSpeaking() {
  const now = performance.now();
  for (const entry of participants.values()) {
    const muted = entry.local ? current().micMuted : Boolean(entry.info.audio?.muted);
    if (entry.meter && !muted && entry.meter.level() > SPEAKING_THRESHOLD) entry.speakingUntil = now + SPEAKING_HOLD_MS;
    const speaking = entry.speakingUntil > now;
    if ((entry.tile.dataset.speaking === "true") !== speaking) entry.tile.dataset.speaking = String(speaking);
  }
}

function relabel() {
  for (const entry of participants.values()) upsertParticipant(entry.info);
}

/** Starts the speaking outlines and keeps labels current (language, our mute state). */
export function bindTiles() {
  if (speakingTimer !== null) return;
  speakingTimer = setInterval(updateSpeaking, 150);
  onLanguageChange(relabel);
  onChange((keys) => {
    if (keys.has("micMuted")) relabel();
  });
}
