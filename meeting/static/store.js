// The meeting page's state. It changes only through the named functions below; each
// change tells the views that subscribed (onChange) which keys changed, and they redraw
// what they show. DOM objects (tiles, the overlay, the preview) stay in the module that
// draws them.

import { loadSettings, saveSettings } from "./settings.js";

const state = {
  link: null, // {token, grants, room}: the token stays in memory from load
  displayName: "",
  settings: loadSettings(),
  localStream: null,
  connection: null, // the signalling MeetingConnection while in the meeting
  you: null,
  captionSocket: null,
  micMuted: false,
  cameraOn: false,
  phase: "start", // start | join | meeting | reconnecting | captions-only | leaving
  // The room's caption state, as the server owns it.
  roomCaptions: { enabled: true, language: null, changed_by: null, languages: [] },
  // What the captions feed reports: socket state, captioner presence, degraded, whether
  // the server is saving the transcript.
  feed: { socket: "connecting", everOpen: false, captioner: "connected", serverDegraded: false, degradedUntil: 0, saving: true },
};

const listeners = new Set();

/** The current state, to read only: change it with the functions below. */
export function current() {
  return state;
}

/** Calls listener(keys, state) after every change. */
export function onChange(listener) {
  listeners.add(listener);
}

function update(patch) {
  Object.assign(state, patch);
  const keys = new Set(Object.keys(patch));
  for (const listener of listeners) listener(keys, state);
}

export function setLink(link) {
  update({ link });
}

export function setPhase(phase) {
  update({ phase });
}

/** The media the viewer joins with, and the name they join as. */
export function setLocalMedia({ localStream, displayName = state.displayName }) {
  update({ localStream, displayName });
}

/** After a (re)join: the signalling connection and who the server says we are. */
export function setConnection(connection, you) {
  update({ connection, you });
}

export function setCaptionSocket(captionSocket) {
  update({ captionSocket });
}

export function setMicMuted(micMuted) {
  update({ micMuted });
}

export function setCameraOn(cameraOn) {
  update({ cameraOn });
}

/** One viewer setting; saved for the next visit. */
export function chooseSetting(key, value) {
  const settings = { ...state.settings, [key]: value };
  saveSettings(settings);
  update({ settings });
}

/** The room's caption state; returns the one it replaces. */
export function setRoomCaptions(next) {
  const before = state.roomCaptions;
  update({
    roomCaptions: {
      ...before,
      ...next,
      languages: Array.isArray(next.languages) ? next.languages : before.languages,
    },
  });
  return before;
}

export function setFeed(patch) {
  const feed = { ...state.feed, ...patch };
  if (feed.socket === "open") feed.everOpen = true;
  update({ feed });
}
