// The captions feed (/captions, captionsocket.js): live captions into the overlay and
// the transcript, the backlog after a (re)connect, and the room's caption state (the
// server's hub owns it; hosts change it on this socket), whose changes are announced.

import { CaptionOverlay } from "./captions.js";
import { CaptionSocket } from "./captionsocket.js";
import { $, role } from "./dom.js";
import { language, t } from "./i18n.js";
import { nodeQuery } from "./nodes.js";
import { notify, onServerError } from "./screens.js";
import { current, setCaptionSocket, setFeed, setRoomCaptions } from "./store.js";
import { colours } from "./tiles.js";
import { Transcript } from "./transcript.js";

const DEGRADED_HOLD_MS = 10000;

export const transcript = new Transcript();
let overlay = null;

/** The overlay, once the meeting view is shown. */
export function captionOverlay() {
  if (!overlay) {
    overlay = new CaptionOverlay($("[data-testid=captions]"), role("captions-log"), {
      colours,
      readingSpeed: current().settings.readingSpeed,
    });
  }
  return overlay;
}

export function startCaptions() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const { room, token } = current().link;
  // The room's node is asked again before every (re)connection (nodes.js).
  const socket = new CaptionSocket({
    url: async () => `${scheme}://${location.host}/captions${await nodeQuery(room, token)}`,
    token,
  });
  setCaptionSocket(socket);
  socket.addEventListener("state", (e) => setFeed({ socket: e.detail.state }));
  let initial = true; // the first room_state after a (re)connect announces nothing
  socket.addEventListener("hello", () => {
    initial = true;
  });
  socket.addEventListener("error", onServerError);
  socket.addEventListener("backlog", (e) => {
    for (const event of e.detail.captions || []) transcript.add(event);
  });
  socket.addEventListener("room_state", (e) => {
    const data = e.detail;
    setFeed({
      captioner: data.captioner || "connected",
      serverDegraded: Boolean(data.degraded),
      saving: data.saving !== false,
    });
    applyRoomCaptions(
      {
        enabled: data.captions !== "off",
        language: data.language ?? null,
        changed_by: data.changed_by ?? null,
        languages: data.languages,
      },
      { initial },
    );
    initial = false;
  });
  socket.addEventListener("caption", (e) => onCaption(e.detail));
  socket.addEventListener("transcript_deleted", () => transcript.clear());
  socket.start();
}

function onCaption(event) {
  if (event.flags?.degraded) setFeed({ degradedUntil: Date.now() + DEGRADED_HOLD_MS });
  overlay?.update(event);
  if (event.kind === "final") transcript.add(event);
}

/** The room's caption state (from /captions, its one source); announces a change of
 * on/off or language to everyone. */
export function applyRoomCaptions(next, { initial = false } = {}) {
  const before = setRoomCaptions(next);
  const changed = before.enabled !== next.enabled;
  if (changed && !initial && next.changed_by) {
    const name = next.changed_by.name || next.changed_by.identity;
    notify(t(next.enabled ? "captions.by_on" : "captions.by_off", { name }));
  }
  const languageChanged = next.language && before.language && next.language !== before.language;
  if (languageChanged && !initial && next.changed_by) {
    const name = next.changed_by.name || next.changed_by.identity;
    notify(t("captions.language_by", { language: languageName(next.language), name }));
  }
  if (changed && !next.enabled) overlay?.clear();
}

/** A language code's name in the interface language (the code itself if unknown). */
export function languageName(code) {
  // "mul" (multiple languages) is the engine's "each speaker's own" (docs/languages.md).
  if (code === "mul") return t("captions.language_auto");
  try {
    return new Intl.DisplayNames([language()], { type: "language" }).of(code) || code;
  } catch {
    return code;
  }
}
