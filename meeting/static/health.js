// The captions health indicator in the header: live, degraded, offline, off, connecting;
// and, for hosts, a warning while the transcript is not being saved.

import { role } from "./dom.js";
import { onLanguageChange, t } from "./i18n.js";
import { current, onChange } from "./store.js";

const DEGRADED_HOLD_MS = 10000;
let timer = null;

/** One word for the captions' health, from the room's caption state and the feed. */
export function healthState({ roomCaptions, feed } = current()) {
  if (!roomCaptions.enabled) return "off";
  if (feed.socket === "connecting" && !feed.everOpen) return "connecting";
  // "absent": no sidecar; "unavailable": its engine cannot caption (e.g. API key refused).
  if (feed.socket !== "open" || feed.captioner !== "connected") return "offline";
  if (feed.serverDegraded || feed.degradedUntil > Date.now()) return "degraded";
  return "live";
}

function render() {
  const health = document.querySelector("[data-testid=captions-health]");
  // After "Leave" the page receives nothing: no "Captions live" over "You left the meeting".
  health.hidden = current().phase === "leaving";
  const state = healthState();
  health.dataset.state = state;
  const by = current().roomCaptions.changed_by;
  const text = role("health-text");
  if (state === "off" && by) text.textContent = t("captions.by_off", { name: by.name || by.identity });
  else text.textContent = t(`health.${state}`);
  // Only hosts can act on a transcript that is not being saved (a full disk, say).
  const { feed, link } = current();
  document.querySelector("[data-testid=saving-warning]").hidden = !(feed.saving === false && link?.grants?.role === "host");
  clearTimeout(timer);
  // "Degraded" after a delayed caption fades by itself when no other follows.
  if (state === "degraded") timer = setTimeout(render, DEGRADED_HOLD_MS);
}

export function bindHealth() {
  onChange((keys) => {
    if (keys.has("feed") || keys.has("roomCaptions") || keys.has("phase")) render();
  });
  onLanguageChange(render);
  render();
}
