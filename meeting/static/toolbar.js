// The meeting toolbar and keys: microphone, camera, captions shown or hidden, the side
// panels (transcript, host controls), the caption settings dialog, leave.

import { captionOverlay } from "./captionfeed.js";
import { $, role } from "./dom.js";
import { onLanguageChange, t } from "./i18n.js";
import { notify, showError } from "./screens.js";
import { bindSettingsForm } from "./settings.js";
import { chooseSetting, current, onChange, setCameraOn, setMicMuted } from "./store.js";
import { attachLocal } from "./tiles.js";
import { leaveMeeting } from "./connection.js";

const PANEL_TOGGLES = { transcript: "transcript-toggle", "host-panel": "host-toggle" };

export function bindToolbar() {
  role("mute").addEventListener("click", toggleMute);
  role("camera").addEventListener("click", toggleCamera);
  role("captions-toggle").addEventListener("click", toggleCaptions);
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
  const { link, localStream } = current();
  const canPublish = link.grants.can_publish !== false;
  role("mute").hidden = !canPublish || localStream.getAudioTracks().length === 0;
  role("camera").hidden = !canPublish;
  bindSettingsForm(role("settings-form"), () => current().settings, chooseSetting);
  addEventListener("resize", placeSettings);
  document.addEventListener("keydown", onKeyDown);
  onChange((keys) => {
    if (keys.has("settings")) applyViewerChoices();
    if (["micMuted", "cameraOn", "settings", "phase"].some((key) => keys.has(key))) render();
  });
  onLanguageChange(render);
  applyViewerChoices();
  render();
}

function onKeyDown(event) {
  if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
  const target = event.target;
  const typing = target instanceof HTMLElement && (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName));
  if (role("settings").open) return; // the dialog handles its own keys
  if (event.key === "Escape") {
    for (const panel of Object.keys(PANEL_TOGGLES)) if (!role(panel).hidden) togglePanel(panel, false);
    return;
  }
  if (typing) return;
  const key = current().settings.captionsKey;
  if (key !== "off" && event.key.toLowerCase() === key) {
    event.preventDefault();
    toggleCaptions();
  }
}

/** Opens or closes a side panel; the two panels share one place, so opening one closes the other. */
function togglePanel(name, open) {
  const show = open ?? role(name).hidden;
  for (const [panel, toggle] of Object.entries(PANEL_TOGGLES)) {
    const visible = panel === name ? show : show ? false : !role(panel).hidden;
    role(panel).hidden = !visible;
    role(toggle).setAttribute("aria-expanded", String(visible));
  }
  // The layout gives an open panel the videos' place on narrow screens (styles.css).
  $("#meeting").dataset.panel = Object.keys(PANEL_TOGGLES).find((panel) => !role(panel).hidden) || "";
  if (show && name === "transcript") {
    // Open on the latest captions; the list follows new ones while it stays at the end.
    const list = role("transcript-list");
    list.scrollTop = list.scrollHeight;
  }
  if (show) (name === "transcript" ? role("transcript-search") : role("host-panel").querySelector("button, select, a"))?.focus();
  else role(PANEL_TOGGLES[name]).focus();
}

function toggleMute() {
  const { localStream, connection, micMuted } = current();
  const track = localStream.getAudioTracks()[0];
  if (!track) return;
  track.enabled = micMuted;
  connection?.setMuted("audio", !micMuted);
  setMicMuted(!micMuted);
}

async function toggleCamera() {
  const { localStream, connection } = current();
  const live = localStream.getVideoTracks()[0];
  if (live) {
    live.stop();
    localStream.removeTrack(live);
    await connection?.replaceTrack("video", null);
    connection?.setMuted("video", true);
    setCameraOn(false);
  } else {
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 360 } } });
      const track = stream.getVideoTracks()[0];
      localStream.addTrack(track);
      await connection?.replaceTrack("video", track);
      connection?.setMuted("video", false);
      setCameraOn(true);
    } catch {
      notify(t("error.media_failed"));
    }
  }
  attachLocal();
}

function toggleCaptions() {
  chooseSetting("captionsVisible", !current().settings.captionsVisible);
}

/** The settings dialog sits beside the caption band, never over it, so the viewer sees
 * each choice take effect on the live captions. */
function placeSettings() {
  const dialog = role("settings");
  if (!dialog.open) return;
  const band = $("#captions-region").getBoundingClientRect();
  const gap = 8;
  const atTop = current().settings.position === "top";
  dialog.style.marginTop = atTop ? `${Math.round(band.bottom + gap)}px` : `${gap}px`;
  dialog.style.maxHeight = `${Math.max(0, Math.round((atTop ? innerHeight - band.bottom : band.top) - 2 * gap))}px`;
}

/** Settings that act on the meeting view: captions shown, reading speed, announcements
 * (hiding the visible captions does not silence screen readers: that is its own
 * setting), the shortcut key; and the dialog's place. */
function applyViewerChoices() {
  const { settings } = current();
  $("[data-testid=captions]").dataset.visible = String(settings.captionsVisible);
  $("#meeting").dataset.captionsVisible = String(settings.captionsVisible);
  const overlay = captionOverlay();
  overlay.readingSpeed = settings.readingSpeed;
  overlay.log = settings.announce === "off" ? null : role("captions-log");
  const toggle = role("captions-toggle");
  if (settings.captionsKey === "off") toggle.removeAttribute("aria-keyshortcuts");
  else toggle.setAttribute("aria-keyshortcuts", settings.captionsKey);
  placeSettings();
}

function render() {
  const { micMuted, cameraOn, settings, phase } = current();
  // Captions-only has no media to mute or send (connection.js).
  role("mute").disabled = role("camera").disabled = phase === "captions-only";
  role("mute").dataset.muted = String(micMuted);
  role("mute-label").textContent = t(micMuted ? "meeting.unmute" : "meeting.mute");
  role("camera").dataset.on = String(cameraOn);
  role("camera-label").textContent = t(cameraOn ? "meeting.camera_off" : "meeting.camera_on");
  const captionsToggle = role("captions-toggle");
  captionsToggle.setAttribute("aria-pressed", String(settings.captionsVisible));
  captionsToggle.title = t(settings.captionsVisible ? "meeting.captions_on" : "meeting.captions_off");
}
