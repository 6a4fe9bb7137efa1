// The meeting page: join screen, meeting view, captions, transcript and host controls.
// The page reads its room from /room/{room} and its token from the URL fragment
// (#token=JWT, never sent to the server in a URL), then speaks docs/signalling.md on /ws
// and docs/captions-api.md on /captions.

import { CaptionOverlay, SpeakerColours } from "./captions.js";
import { CaptionSocket } from "./captionsocket.js";
import { nodeQuery } from "./nodes.js";
import { ReconnectPolicy, sleep } from "./reconnect.js";
import { CloseCode, closeError, FATAL } from "./closecodes.js";
import { detectLanguage, language, onLanguageChange, setLanguage, t } from "./i18n.js";
import { applySettings, bindSettingsForm, loadSettings, saveSettings } from "./settings.js";
import { MeetingConnection } from "./signalling.js";
import { saveFile, Transcript, TranscriptPanel } from "./transcript.js";

const $ = (selector, root = document) => root.querySelector(selector);
const role = (name, root = document) => root.querySelector(`[data-role="${name}"]`);

// About 1, 2, 4, 8 and 10 s (less jitter), then the page gives up and offers "Try again".
const RECONNECT = { baseMs: 1000, maxMs: 10000, maxAttempts: 5 };
const NOTICE_MS = 10000;
const SPEAKING_THRESHOLD = 0.02;
const SPEAKING_HOLD_MS = 700;
const DEGRADED_HOLD_MS = 10000;
// Small tolerance for the viewer's clock; the server checks expiry exactly.
const EXPIRY_SKEW_SECONDS = 30;

const ERROR_MESSAGES = {
  token_missing: "error.no_token",
  token_invalid: "error.invalid",
  token_expired: "error.expired",
  wrong_room: "error.wrong_room",
  forbidden: "error.forbidden",
  room_full: "error.room_full",
  replaced: "error.replaced",
  connection_failed: "error.connection_failed",
  timeout: "error.connection_failed",
};

const state = {
  room: "",
  token: "",
  grants: null,
  settings: loadSettings(),
  localStream: null,
  previewStream: null,
  // The preview being (re)started: joining waits for it, or a quick click after a
  // device change would join without a microphone.
  previewPending: Promise.resolve(),
  previewGeneration: 0,
  audioContext: null,
  connection: null,
  captionSocket: null,
  you: null,
  participants: new Map(), // identity -> {info, tile, audio, video, meter}
  // The room's caption state, as the server's hub owns it (/captions room_state).
  roomCaptions: { enabled: true, language: null, changed_by: null, languages: [] },
  roomStateInitial: true,
  captioner: "connected",
  socketState: "connecting",
  degradedUntil: 0,
  serverDegraded: false,
  micMuted: false,
  cameraOn: false,
  leaving: false,
  reconnecting: false,
};

const colours = new SpeakerColours();
const transcript = new Transcript();
let overlay = null;
let noticeTimer = null;

// ---------------------------------------------------------------- boot

function boot() {
  setLanguage(detectLanguage(), { save: false });
  applySettings(state.settings);
  $(".lang-switch").addEventListener("click", () => setLanguage(language() === "fr" ? "en" : "fr"));
  onLanguageChange(() => refreshLabels());
  role("skip-link").addEventListener("click", (event) => {
    // Focus moves; the URL fragment, which holds the token, stays as it is.
    event.preventDefault();
    skipTarget()?.focus();
  });
  refreshLabels();

  const pathRoom = decodeURIComponent((location.pathname.match(/^\/room\/([^/]+)\/?$/) || [])[1] || "");
  const token = new URLSearchParams(location.hash.slice(1)).get("token") || "";
  state.token = token;
  if (!token) return showError("token_missing");
  const grants = decodeGrants(token);
  if (!grants) return showError("token_invalid");
  if (pathRoom && grants.room !== pathRoom) return showError("wrong_room");
  if (grants.exp && grants.exp + EXPIRY_SKEW_SECONDS < Date.now() / 1000) return showError("token_expired");
  state.grants = grants;
  state.room = pathRoom || grants.room;
  role("room-name").textContent = state.room;
  showJoin();
}

/** The token's grants (not verified: the server does that), or null if it is not a JWT. */
function decodeGrants(token) {
  try {
    const part = token.split(".")[1];
    const json = atob(part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "="));
    const claims = JSON.parse(new TextDecoder().decode(Uint8Array.from(json, (c) => c.charCodeAt(0))));
    const grants = claims.grants;
    if (!grants || typeof grants.room !== "string" || typeof grants.identity !== "string") return null;
    return { ...grants, exp: Number(claims.exp) || 0 };
  } catch {
    return null;
  }
}

function showScreen(id) {
  for (const screen of document.querySelectorAll(".screen")) screen.hidden = screen.id !== id;
  refreshSkipLink();
}

/** The skip link leads to the captions in a meeting, else to the screen's main content. */
function skipTarget() {
  if (!$("#meeting").hidden) return $("#captions-region");
  return document.querySelector(".screen:not([hidden])");
}

function refreshSkipLink() {
  const link = role("skip-link");
  const target = skipTarget();
  const inMeeting = target?.id === "captions-region";
  link.dataset.i18n = inMeeting ? "meeting.captions" : "skip.main";
  link.textContent = t(link.dataset.i18n);
  if (target) link.setAttribute("href", `#${target.id}`);
}

function showError(code, { heading = "error.heading", retry = false, detail = "" } = {}) {
  stopPreview();
  showScreen("error-screen");
  const key = ERROR_MESSAGES[code];
  role("error-heading").textContent = t(heading);
  const message = role("error-message");
  message.dataset.code = code;
  if (code === "left") message.textContent = "";
  else message.textContent = key ? t(key) : t("error.unknown", { detail: detail || code });
  const button = role("error-retry");
  button.hidden = !retry;
  // The token is kept in memory since load: put it back in the fragment for the reload,
  // whatever changed the URL meanwhile.
  button.onclick = () => {
    if (state.token) history.replaceState(null, "", `${location.pathname}${location.search}#token=${state.token}`);
    location.reload();
  };
  if (retry) button.textContent = t(heading === "meeting.left" ? "meeting.rejoin" : "error.retry");
  role("error-heading").focus();
}

// ---------------------------------------------------------------- join screen

async function showJoin() {
  showScreen("join-screen");
  const form = role("join-form");
  const nameInput = $("#join-name");
  nameInput.value = state.grants.name || "";
  // The SFU shows everyone the name signed into the link, so it is only typed in here
  // when the link carries none.
  nameInput.readOnly = Boolean(state.grants.name);
  role("join-name-hint").hidden = !state.grants.name;
  role("join-room").textContent = t("join.room", { room: state.room });
  role("join-role").textContent = t(`join.role.${state.grants.role}`) || "";
  const canPublish = state.grants.can_publish !== false;
  role("media-fields").hidden = !canPublish;
  role("preview-figure").hidden = !canPublish;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    join();
  });
  if (canPublish) {
    $("#join-mic").addEventListener("change", () => refreshPreview());
    $("#join-camera").addEventListener("change", () => refreshPreview());
    await refreshPreview({ firstTime: true });
  }
  (nameInput.readOnly ? $("[data-testid=join-button]") : nameInput).focus();
}

function setJoinMessage(key, params) {
  role("join-message").textContent = key ? t(key, params) : "";
  role("join-message").dataset.code = key || "";
}

function refreshPreview(options = {}) {
  state.previewPending = startPreview(options).catch(() => {});
  return state.previewPending;
}

async function startPreview({ firstTime = false } = {}) {
  const generation = ++state.previewGeneration;
  const micSelect = $("#join-mic");
  const cameraSelect = $("#join-camera");
  const micId = firstTime ? "default" : micSelect.value;
  const cameraId = firstTime ? "default" : cameraSelect.value;
  stopPreview();
  setJoinMessage(null);
  const wantAudio = micId !== "";
  const wantVideo = cameraId !== "";
  let stream = null;
  if (wantAudio || wantVideo) {
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        audio: wantAudio ? deviceConstraint(micId, { echoCancellation: true, noiseSuppression: true }) : false,
        video: wantVideo ? deviceConstraint(cameraId, { width: { ideal: 640 }, height: { ideal: 360 } }) : false,
      });
    } catch (error) {
      // Retry with the microphone alone: a missing or refused camera must not block audio.
      if (wantVideo && wantAudio) {
        try {
          stream = await navigator.mediaDevices.getUserMedia({ audio: deviceConstraint(micId, {}) });
          setJoinMessage("error.media_failed");
        } catch (micError) {
          reportMediaError(micError);
        }
      } else {
        reportMediaError(error);
      }
    }
  }
  if (generation !== state.previewGeneration) {
    // A newer preview started meanwhile (another device change): it wins.
    for (const track of stream?.getTracks() || []) track.stop();
    return;
  }
  state.previewStream = stream;
  await fillDeviceLists(stream);
  const video = role("preview");
  const hasVideo = Boolean(stream?.getVideoTracks().length);
  video.srcObject = hasVideo ? stream : null;
  role("preview-caption").textContent = hasVideo ? t("join.preview") : t("join.preview_off");
  role("preview-caption").dataset.i18n = hasVideo ? "join.preview" : "join.preview_off";
  if (stream?.getAudioTracks().length) watchPreviewLevel(stream);
}

function deviceConstraint(id, extra) {
  return id && id !== "default" ? { ...extra, deviceId: { exact: id } } : { ...extra };
}

function reportMediaError(error) {
  if (error?.name === "NotAllowedError" || error?.name === "SecurityError") setJoinMessage("error.mic_denied");
  else if (error?.name === "NotFoundError" || error?.name === "OverconstrainedError") setJoinMessage("error.mic_missing");
  else setJoinMessage("error.media_failed");
  $("#join-mic").value = "";
}

async function fillDeviceLists(stream) {
  let devices = [];
  try {
    devices = await navigator.mediaDevices.enumerateDevices();
  } catch {
    devices = [];
  }
  const activeMic = stream?.getAudioTracks()[0]?.getSettings().deviceId;
  const activeCamera = stream?.getVideoTracks()[0]?.getSettings().deviceId;
  fillSelect($("#join-mic"), devices.filter((d) => d.kind === "audioinput"), "join.no_mic", activeMic, "join.mic");
  fillSelect($("#join-camera"), devices.filter((d) => d.kind === "videoinput"), "join.no_camera", activeCamera, "join.camera");
}

function fillSelect(select, devices, noneKey, activeId, labelKey) {
  const options = devices
    .filter((d) => d.deviceId)
    .map((d, i) => new Option(d.label || `${t(labelKey)} ${i + 1}`, d.deviceId));
  const none = new Option(t(noneKey), "");
  none.dataset.i18n = noneKey;
  select.replaceChildren(...options, none);
  select.value = activeId && options.some((o) => o.value === activeId) ? activeId : "";
}

let previewMeterTimer = null;

function watchPreviewLevel(stream) {
  const meter = levelMeter(stream);
  if (!meter) return;
  previewMeterTimer = setInterval(() => {
    $("#join-level").value = Math.min(1, meter.level() * 4);
  }, 100);
}

function stopPreview({ keep = false } = {}) {
  clearInterval(previewMeterTimer);
  previewMeterTimer = null;
  if (state.previewStream && !keep) for (const track of state.previewStream.getTracks()) track.stop();
  if (!keep) state.previewStream = null;
}

async function join() {
  const name = $("#join-name").value.trim();
  if (!name) {
    setJoinMessage("join.name_required");
    $("#join-name").focus();
    return;
  }
  const button = $("[data-testid=join-button]");
  button.disabled = true;
  button.textContent = t("join.joining");
  ensureAudioContext();
  await state.previewPending;
  stopPreview({ keep: true });
  state.localStream = state.previewStream || new MediaStream();
  state.previewStream = null;
  state.displayName = name;
  try {
    await connect();
  } catch (error) {
    button.disabled = false;
    button.textContent = t("join.button");
    for (const track of state.localStream.getTracks()) track.stop();
    showError(error.code || "connection_failed", { retry: error.code === "connection_failed" || error.code === "timeout", detail: error.message });
    return;
  }
  enterMeeting();
}

// ---------------------------------------------------------------- connection

async function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const connection = new MeetingConnection({
    url: `${scheme}://${location.host}/ws${await nodeQuery(state.room, state.token)}`,
    token: state.token,
    room: state.room,
    name: state.displayName,
  });
  const joined = await connection.join();
  state.connection = connection;
  state.you = joined.you;
  wireConnection(connection);
  onJoined(joined);
  const audio = state.localStream.getAudioTracks()[0] || null;
  const video = state.localStream.getVideoTracks()[0] || null;
  state.cameraOn = Boolean(video);
  if (state.grants.can_publish !== false && (audio || video)) {
    await connection.publish({ audio, video });
    if (audio && state.micMuted) {
      audio.enabled = false;
      connection.setMuted("audio", true);
    }
  }
}

function wireConnection(connection) {
  connection.addEventListener("participant_joined", (e) => {
    upsertParticipant(e.detail.participant);
    notify(t("meeting.joined", { name: e.detail.participant.name || e.detail.participant.identity }), { brief: true });
  });
  connection.addEventListener("participant_updated", (e) => upsertParticipant(e.detail.participant));
  connection.addEventListener("participant_left", (e) => {
    removeParticipant(e.detail.identity);
    notify(t("meeting.left_room", { name: e.detail.name || e.detail.identity }), { brief: true });
  });
  connection.addEventListener("track", (e) => attachTrack(e.detail));
  connection.addEventListener("track_ended", (e) => detachTrack(e.detail));
  connection.addEventListener("server_error", onServerError);
  connection.addEventListener("media_failed", () => connection.ws?.close(CloseCode.MEDIA_FAILED, "media failed"));
  connection.addEventListener("closed", (e) => onConnectionClosed(connection, e.detail));
}

function onJoined(joined) {
  for (const participant of joined.participants || []) upsertParticipant(participant);
}

function onConnectionClosed(connection, detail) {
  if (connection !== state.connection || state.leaving || detail.byUs) return;
  if (FATAL.has(detail.code) && detail.code !== CloseCode.NORMAL) {
    leaveMeeting({ silent: true });
    showError(detail.error || closeError(detail.code));
    return;
  }
  reconnect();
}

async function reconnect() {
  if (state.reconnecting) return;
  state.reconnecting = true;
  notify(t("error.connection_lost"), { sticky: true });
  document.documentElement.dataset.connection = "lost";
  for (const identity of [...state.participants.keys()]) if (identity !== state.you?.identity) removeParticipant(identity);
  const policy = new ReconnectPolicy(RECONNECT);
  for (let delay = policy.next(); delay !== null; delay = policy.next()) {
    await sleep(delay);
    if (state.leaving) return;
    try {
      await connect();
      state.reconnecting = false;
      document.documentElement.dataset.connection = "ok";
      notify(t("error.reconnected"), { brief: true });
      return;
    } catch (error) {
      if (error.code && ERROR_MESSAGES[error.code] && !["connection_failed", "timeout"].includes(error.code)) {
        state.reconnecting = false;
        leaveMeeting({ silent: true });
        showError(error.code);
        return;
      }
    }
  }
  state.reconnecting = false;
  leaveMeeting({ silent: true });
  showError("connection_failed", { retry: true });
}


// ---------------------------------------------------------------- meeting view

function enterMeeting() {
  showScreen("meeting");
  $("[data-testid=captions-health]").hidden = false;
  overlay = new CaptionOverlay($("[data-testid=captions]"), role("captions-log"), {
    colours,
    readingSpeed: state.settings.readingSpeed,
  });
  upsertParticipant({ ...state.you, name: state.you.name || state.displayName }, { local: true });
  attachLocal();
  const panel = new TranscriptPanel(role("transcript"), transcript, { colours, room: state.room });
  onLanguageChange(() => panel.render());
  bindToolbar();
  bindSettingsForm(role("settings-form"), state.settings, () => {
    applyViewerChoices();
    placeSettings();
  });
  addEventListener("resize", placeSettings);
  setCaptionsVisible(state.settings.captionsVisible);
  if (state.grants.role === "host") setUpHost();
  startCaptions();
  setInterval(updateSpeaking, 150);
  refreshLabels();
  $("[data-testid=captions-toggle]").focus();
}

function tileFor(identity) {
  return state.participants.get(identity);
}

function upsertParticipant(info, { local = info?.identity === state.you?.identity } = {}) {
  if (!info?.identity) return;
  let entry = state.participants.get(info.identity);
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
    state.participants.set(info.identity, entry);
  }
  entry.info = { ...entry.info, ...info };
  const display = entry.info.name || entry.info.identity;
  entry.tile.dataset.name = display;
  entry.name.textContent = entry.local ? t("meeting.you", { name: display }) : display;
  entry.avatar.textContent = display.slice(0, 1).toUpperCase();
  entry.avatar.style.background = `var(--spk-${entry.tile.dataset.color})`;
  const audioMuted = entry.local ? state.micMuted : Boolean(entry.info.audio?.muted) || !entry.info.audio?.published;
  entry.muted.textContent = audioMuted ? `(${t("meeting.muted")})` : "";
  if (!entry.local && entry.info.video && (!entry.info.video.published || entry.info.video.muted)) {
    entry.tile.dataset.video = "off";
  }
}

function removeParticipant(identity) {
  const entry = state.participants.get(identity);
  if (!entry) return;
  entry.meter?.close();
  entry.audio?.remove();
  entry.tile.remove();
  state.participants.delete(identity);
}

function attachLocal() {
  const entry = tileFor(state.you.identity);
  const stream = state.localStream;
  const hasVideo = stream.getVideoTracks().length > 0;
  entry.video.srcObject = hasVideo ? stream : null;
  entry.tile.dataset.video = hasVideo ? "on" : "off";
  entry.meter?.close();
  entry.meter = stream.getAudioTracks().length ? levelMeter(stream) : null;
}

function attachTrack({ identity, name, kind, track }) {
  if (!tileFor(identity)) upsertParticipant({ identity, name });
  const entry = tileFor(identity);
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

function detachTrack({ identity, kind }) {
  const entry = tileFor(identity);
  if (!entry) return;
  if (kind === "video") {
    entry.video.srcObject = null;
    entry.tile.dataset.video = "off";
  } else {
    entry.meter?.close();
    entry.meter = null;
  }
}

// ---- active speaker (audio level of each participant's stream)

function ensureAudioContext() {
  if (!state.audioContext) {
    try {
      state.audioContext = new AudioContext();
    } catch {
      state.audioContext = null;
    }
  }
  state.audioContext?.resume?.();
  return state.audioContext;
}

function levelMeter(stream) {
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
  for (const entry of state.participants.values()) {
    const muted = entry.local ? state.micMuted : Boolean(entry.info.audio?.muted);
    if (entry.meter && !muted && entry.meter.level() > SPEAKING_THRESHOLD) entry.speakingUntil = now + SPEAKING_HOLD_MS;
    const speaking = entry.speakingUntil > now;
    if ((entry.tile.dataset.speaking === "true") !== speaking) entry.tile.dataset.speaking = String(speaking);
  }
}

// ---- toolbar

function bindToolbar() {
  role("mute").addEventListener("click", toggleMute);
  role("camera").addEventListener("click", toggleCamera);
  role("captions-toggle").addEventListener("click", () => setCaptionsVisible(!state.settings.captionsVisible));
  role("transcript-toggle").addEventListener("click", () => togglePanel("transcript"));
  role("transcript-close").addEventListener("click", () => togglePanel("transcript", false));
  role("host-toggle").addEventListener("click", () => togglePanel("host-panel"));
  role("host-close").addEventListener("click", () => togglePanel("host-panel", false));
  role("settings-open").addEventListener("click", () => {
    role("settings").showModal();
    placeSettings();
    // Focus the current choice, not the first (unchecked) radio.
    role("settings-form").querySelector("input:checked")?.focus();
  });
  role("leave").addEventListener("click", () => {
    leaveMeeting();
    showError("left", { heading: "meeting.left", retry: true });
  });
  const canPublish = state.grants.can_publish !== false;
  role("mute").hidden = !canPublish || state.localStream.getAudioTracks().length === 0;
  role("camera").hidden = !canPublish;
  document.addEventListener("keydown", onKeyDown);
}

function onKeyDown(event) {
  if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
  const target = event.target;
  const typing = target instanceof HTMLElement && (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName));
  if (role("settings").open) return; // the dialog handles its own keys
  if (event.key === "Escape") {
    for (const panel of ["transcript", "host-panel"]) if (!role(panel).hidden) togglePanel(panel, false);
    return;
  }
  if (typing) return;
  const key = state.settings.captionsKey;
  if (key !== "off" && event.key.toLowerCase() === key) {
    event.preventDefault();
    setCaptionsVisible(!state.settings.captionsVisible);
  }
}

const PANEL_TOGGLES = { transcript: "transcript-toggle", "host-panel": "host-toggle" };

/** Opens or closes a side panel; the two panels share one place, so opening one closes the other. */
function togglePanel(name, open) {
  const show = open ?? role(name).hidden;
  for (const [panel, toggle] of Object.entries(PANEL_TOGGLES)) {
    const visible = panel === name ? show : show ? false : !role(panel).hidden;
    role(panel).hidden = !visible;
    role(toggle).setAttribute("aria-expanded", String(visible));
  }
  const toggles = PANEL_TOGGLES;
  // The layout gives an open panel the videos' place on narrow screens (styles.css).
  $("#meeting").dataset.panel = Object.keys(PANEL_TOGGLES).find((panel) => !role(panel).hidden) || "";
  if (show && name === "transcript") {
    // Open on the latest captions; the list follows new ones while it stays at the end.
    const list = role("transcript-list");
    list.scrollTop = list.scrollHeight;
  }
  if (show) (name === "transcript" ? role("transcript-search") : role("host-panel").querySelector("button, select, a"))?.focus();
  else role(toggles[name]).focus();
}

function toggleMute() {
  const track = state.localStream.getAudioTracks()[0];
  if (!track) return;
  state.micMuted = !state.micMuted;
  track.enabled = !state.micMuted;
  state.connection?.setMuted("audio", state.micMuted);
  upsertParticipant(state.you);
  refreshLabels();
}

async function toggleCamera() {
  const current = state.localStream.getVideoTracks()[0];
  if (current) {
    current.stop();
    state.localStream.removeTrack(current);
    await state.connection?.replaceTrack("video", null);
    state.connection?.setMuted("video", true);
    state.cameraOn = false;
  } else {
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 360 } } });
      const track = stream.getVideoTracks()[0];
      state.localStream.addTrack(track);
      await state.connection?.replaceTrack("video", track);
      state.connection?.setMuted("video", false);
      state.cameraOn = true;
    } catch {
      notify(t("error.media_failed"));
    }
  }
  attachLocal();
  refreshLabels();
}

function setCaptionsVisible(visible) {
  state.settings.captionsVisible = visible;
  saveSettings(state.settings);
  const box = $("[data-testid=captions]");
  box.dataset.visible = String(visible);
  $("#meeting").dataset.captionsVisible = String(visible);
  // Hiding the visible captions does not silence screen readers: that is its own setting.
  applyViewerChoices();
  refreshLabels();
}

/** The settings dialog sits beside the caption band, never over it, so the viewer sees
 * each choice take effect on the live captions. */
function placeSettings() {
  const dialog = role("settings");
  if (!dialog.open) return;
  const band = $("#captions-region").getBoundingClientRect();
  const gap = 8;
  const atTop = state.settings.position === "top";
  dialog.style.marginTop = atTop ? `${Math.round(band.bottom + gap)}px` : `${gap}px`;
  dialog.style.maxHeight = `${Math.max(0, Math.round((atTop ? innerHeight - band.bottom : band.top) - 2 * gap))}px`;
}

/** Settings that act on the meeting view: reading speed, announcements, shortcut key. */
function applyViewerChoices() {
  if (overlay) {
    overlay.readingSpeed = state.settings.readingSpeed;
    overlay.log = state.settings.announce === "off" ? null : role("captions-log");
  }
  const key = state.settings.captionsKey;
  const toggle = role("captions-toggle");
  if (key === "off") toggle.removeAttribute("aria-keyshortcuts");
  else toggle.setAttribute("aria-keyshortcuts", key);
}

function leaveMeeting({ silent = false } = {}) {
  state.leaving = true;
  if (!silent) state.connection?.leave();
  else state.connection?.ws?.close(CloseCode.NORMAL);
  state.captionSocket?.stop();
  for (const track of state.localStream?.getTracks() || []) track.stop();
  for (const identity of [...state.participants.keys()]) removeParticipant(identity);
}

// ---------------------------------------------------------------- captions

function startCaptions() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new CaptionSocket({
    url: async () => `${scheme}://${location.host}/captions${await nodeQuery(state.room, state.token)}`,
    token: state.token,
  });
  state.captionSocket = socket;
  socket.addEventListener("state", (e) => {
    state.socketState = e.detail.state;
    updateHealth();
  });
  socket.addEventListener("hello", () => {
    state.roomStateInitial = true; // the first room_state after a (re)connect announces nothing
  });
  socket.addEventListener("error", onServerError);
  socket.addEventListener("backlog", (e) => {
    for (const event of e.detail.captions || []) transcript.add(event);
  });
  socket.addEventListener("room_state", (e) => {
    const data = e.detail;
    state.captioner = data.captioner || "connected";
    state.serverDegraded = Boolean(data.degraded);
    // The server cannot write the transcript (full disk...): only the host can act on it.
    $("[data-testid=saving-warning]").hidden = !(data.saving === false && state.grants?.role === "host");
    const initial = state.roomStateInitial;
    state.roomStateInitial = false;
    applyRoomCaptions(
      {
        enabled: data.captions !== "off",
        language: data.language ?? null,
        changed_by: data.changed_by ?? null,
        languages: data.languages,
      },
      { initial },
    );
  });
  socket.addEventListener("caption", (e) => onCaption(e.detail));
  socket.addEventListener("transcript_deleted", () => transcript.clear());
  socket.start();
}

function onCaption(event) {
  if (event.flags?.degraded) state.degradedUntil = Date.now() + DEGRADED_HOLD_MS;
  overlay?.update(event);
  if (event.kind === "final") transcript.add(event);
  updateHealth();
}

function onServerError(e) {
  if (e.detail.code === "forbidden") notify(t("error.forbidden"));
}

/** The room's caption state (from /captions, its one source); announces changes to everyone. */
function applyRoomCaptions(next, { initial = false } = {}) {
  const before = state.roomCaptions;
  const changed = before.enabled !== next.enabled;
  state.roomCaptions = {
    ...before,
    ...next,
    languages: Array.isArray(next.languages) ? next.languages : before.languages,
  };
  if (changed && !initial && next.changed_by) {
    const name = next.changed_by.name || next.changed_by.identity;
    notify(t(next.enabled ? "captions.by_on" : "captions.by_off", { name }));
  }
  const languageChanged = next.language && before.language && next.language !== before.language;
  if (languageChanged && !initial && next.changed_by) {
    const name = next.changed_by.name || next.changed_by.identity;
    const names = new Intl.DisplayNames([language()], { type: "language" });
    notify(t("captions.language_by", { language: safeLanguageName(names, next.language), name }));
  }
  if (changed && !next.enabled) overlay?.clear();
  updateHostControls();
  updateHealth();
}

function healthState() {
  if (!state.roomCaptions.enabled) return "off";
  if (state.socketState === "connecting" && !state.captionSocketEverOpen) return "connecting";
  if (state.socketState !== "open" || state.captioner === "absent") return "offline";
  if (state.serverDegraded || state.degradedUntil > Date.now()) return "degraded";
  return "live";
}

function updateHealth() {
  if (state.socketState === "open") state.captionSocketEverOpen = true;
  const health = $("[data-testid=captions-health]");
  const current = healthState();
  health.dataset.state = current;
  const text = role("health-text");
  const by = state.roomCaptions.changed_by;
  if (current === "off" && by) text.textContent = t("captions.by_off", { name: by.name || by.identity });
  else text.textContent = t(`health.${current}`);
  clearTimeout(updateHealth.timer);
  if (current === "degraded") updateHealth.timer = setTimeout(updateHealth, DEGRADED_HOLD_MS);
}

// ---------------------------------------------------------------- host controls

function setUpHost() {
  role("host-toggle").hidden = false;
  const toggle = role("room-captions-toggle");
  toggle.hidden = false;
  toggle.addEventListener("click", () => state.captionSocket?.setCaptions(!state.roomCaptions.enabled));
  role("host-language").addEventListener("change", (e) => state.captionSocket?.setLanguage(e.target.value));
  for (const link of document.querySelectorAll("[data-server-download]")) {
    const format = link.dataset.serverDownload;
    link.href = `/rooms/${encodeURIComponent(state.room)}/transcript.${format}`;
    link.addEventListener("click", (event) => {
      event.preventDefault();
      downloadServerTranscript(format);
    });
  }
  updateHostControls();
}

async function downloadServerTranscript(format) {
  try {
    const response = await fetch(`/rooms/${encodeURIComponent(state.room)}/transcript.${format}`, {
      headers: { Authorization: `Bearer ${state.token}` },
    });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      notify(t(ERROR_MESSAGES[body.error] || "error.unknown", { detail: body.error || response.status }));
      return;
    }
    const stamp = new Date().toISOString().slice(0, 10);
    saveFile(`${state.room}-${stamp}.${format}`, await response.text(), response.headers.get("Content-Type") || "text/plain");
  } catch (error) {
    notify(t("error.unknown", { detail: String(error) }));
  }
}

function updateHostControls() {
  if (state.grants?.role !== "host") return;
  const enabled = state.roomCaptions.enabled;
  const toggle = role("room-captions-toggle");
  toggle.setAttribute("aria-checked", String(enabled));
  toggle.dataset.enabled = String(enabled);
  // The switch keeps one name; aria-checked says whether it is on.
  role("room-captions-label").textContent = t("host.room_captions");
  const languages = state.roomCaptions.languages || [];
  role("language-field").hidden = languages.length < 2;
  const select = role("host-language");
  if (languages.length >= 2) {
    const names = new Intl.DisplayNames([language()], { type: "language" });
    select.replaceChildren(...languages.map((code) => new Option(safeLanguageName(names, code), code)));
    select.value = state.roomCaptions.language || languages[0];
  }
}

function safeLanguageName(names, code) {
  // "mul" (multiple languages) is the engine's "each speaker's own" (docs/languages.md).
  if (code === "mul") return t("captions.language_auto");
  try {
    return names.of(code) || code;
  } catch {
    return code;
  }
}

// ---------------------------------------------------------------- labels and notices

function refreshLabels() {
  role("room-name").textContent = state.room || t("app.title");
  // The switch names the other language, in that language.
  $(".lang-switch").lang = language() === "fr" ? "en" : "fr";
  refreshSkipLink();
  if (role("join-room") && state.room) role("join-room").textContent = t("join.room", { room: state.room });
  if (state.grants) role("join-role").textContent = t(`join.role.${state.grants.role}`);
  const mute = role("mute");
  mute.dataset.muted = String(state.micMuted);
  role("mute-label").textContent = t(state.micMuted ? "meeting.unmute" : "meeting.mute");
  role("camera").dataset.on = String(state.cameraOn);
  role("camera-label").textContent = t(state.cameraOn ? "meeting.camera_off" : "meeting.camera_on");
  const captionsToggle = role("captions-toggle");
  captionsToggle.setAttribute("aria-pressed", String(state.settings.captionsVisible));
  captionsToggle.title = t(state.settings.captionsVisible ? "meeting.captions_on" : "meeting.captions_off");
  for (const entry of state.participants.values()) upsertParticipant(entry.info);
  if (state.connection) {
    updateHealth();
    updateHostControls();
  }
  const message = role("error-message");
  if (message.dataset.code && ERROR_MESSAGES[message.dataset.code]) message.textContent = t(ERROR_MESSAGES[message.dataset.code]);
  const joinMessage = role("join-message");
  if (joinMessage.dataset.code) joinMessage.textContent = t(joinMessage.dataset.code);
}

function notify(text, { brief = false, sticky = false } = {}) {
  const notice = role("notice");
  notice.textContent = text;
  clearTimeout(noticeTimer);
  if (!sticky) noticeTimer = setTimeout(() => (notice.textContent = ""), brief ? NOTICE_MS / 2 : NOTICE_MS);
}

boot();
