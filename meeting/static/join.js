// The join screen: name, microphone and camera with a live preview and level meter.
// Joining waits for a preview being restarted, or a quick click after a device change
// would join without a microphone.

import { $, role } from "./dom.js";
import { onLanguageChange, t } from "./i18n.js";
import { notify, onErrorScreen, showError, showScreen } from "./screens.js";
import { current, setLocalMedia } from "./store.js";
import { ensureAudioContext, levelMeter } from "./tiles.js";

// What the page asks of a microphone and a camera.
const MIC = { echoCancellation: true, noiseSuppression: true };
const CAMERA = { width: { ideal: 640 }, height: { ideal: 360 } };

let previewStream = null;
let previewPending = Promise.resolve();
let previewGeneration = 0;
let previewMeterTimer = null;

/** Shows the join screen; joining calls `connect()` (which may throw), then `enter()`. */
export async function showJoin({ connect, enter }) {
  const { grants, room } = current().link;
  showScreen("join-screen");
  const form = role("join-form");
  const nameInput = $("#join-name");
  nameInput.value = grants.name || "";
  // The SFU shows everyone the name signed into the link, so it is only typed in here
  // when the link carries none.
  nameInput.readOnly = Boolean(grants.name);
  role("join-name-hint").hidden = !grants.name;
  const canPublish = grants.can_publish !== false;
  role("media-fields").hidden = !canPublish;
  role("preview-figure").hidden = !canPublish;
  refreshLabels(room, grants);
  onLanguageChange(() => refreshLabels(room, grants));
  onErrorScreen(() => stopPreview());
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    join(connect, enter);
  });
  if (canPublish) {
    $("#join-mic").addEventListener("change", () => refreshPreview());
    $("#join-camera").addEventListener("change", () => refreshPreview());
    await refreshPreview({ firstTime: true });
  }
  (nameInput.readOnly ? $("[data-testid=join-button]") : nameInput).focus();
}

function refreshLabels(room, grants) {
  role("join-room").textContent = t("join.room", { room });
  // Guests' text says they only listen and read; any other link that may not publish
  // says so too, since its microphone and camera choice is not shown.
  const listenOnly = grants.can_publish === false && grants.role !== "guest";
  role("join-role").textContent = [t(`join.role.${grants.role}`), listenOnly ? t("join.listen_only") : ""].filter(Boolean).join(" ");
  const joinMessage = role("join-message");
  if (joinMessage.dataset.code) joinMessage.textContent = t(joinMessage.dataset.code);
}

function setJoinMessage(key, params) {
  role("join-message").textContent = key ? t(key, params) : "";
  role("join-message").dataset.code = key || "";
}

function refreshPreview(options = {}) {
  previewPending = startPreview(options).catch(() => {});
  return previewPending;
}

async function startPreview({ firstTime = false } = {}) {
  const generation = ++previewGeneration;
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
        audio: wantAudio ? deviceConstraint(micId, MIC) : false,
        video: wantVideo ? deviceConstraint(cameraId, CAMERA) : false,
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
  if (generation !== previewGeneration) {
    // A newer preview started meanwhile (another device change): it wins.
    for (const track of stream?.getTracks() || []) track.stop();
    return;
  }
  previewStream = stream;
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

/** Opens again the devices of tracks the page stopped (`[{kind, deviceId}]`); an empty
 * stream, said in a notice, when they cannot be (joining without them still works). */
export async function reopenDevices(devices) {
  const wanted = (kind, extra) => {
    const device = devices.find((d) => d.kind === kind);
    return device ? deviceConstraint(device.deviceId, extra) : false;
  };
  const audio = wanted("audio", MIC);
  const video = wanted("video", CAMERA);
  if (!audio && !video) return new MediaStream();
  try {
    return await navigator.mediaDevices.getUserMedia({ audio, video });
  } catch {
    notify(t("error.media_failed"));
    return new MediaStream();
  }
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
  if (previewStream && !keep) for (const track of previewStream.getTracks()) track.stop();
  if (!keep) previewStream = null;
}

async function join(connect, enter) {
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
  await previewPending;
  stopPreview({ keep: true });
  const localStream = previewStream || new MediaStream();
  previewStream = null;
  setLocalMedia({ localStream, displayName: name });
  try {
    await connect();
  } catch (error) {
    button.disabled = false;
    button.textContent = t("join.button");
    for (const track of localStream.getTracks()) track.stop();
    showError(error.code || "connection_failed", {
      retry: ["connection_failed", "timeout", "media_blocked"].includes(error.code),
      detail: error.message,
    });
    return;
  }
  enter();
}
