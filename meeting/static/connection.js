// The meeting connection (signalling.js): join, publish our media, follow participants
// and tracks, reconnect with the page's one policy (reconnect.js), leave.

import { CloseCode, closeError, FATAL } from "./closecodes.js";
import { t } from "./i18n.js";
import { ReconnectPolicy, sleep } from "./reconnect.js";
import { ERROR_MESSAGES, notify, onServerError, showError } from "./screens.js";
import { nodeQuery } from "./nodes.js";
import { MeetingConnection } from "./signalling.js";
import { current, setCameraOn, setConnection, setPhase } from "./store.js";
import { attachTrack, detachTrack, removeParticipant, removeParticipants, upsertParticipant } from "./tiles.js";

// About 1, 2, 4, 8 and 10 s (less jitter), then the page gives up and offers "Try again".
const RECONNECT = { baseMs: 1000, maxMs: 10000, maxAttempts: 5 };

/** Joins the room and publishes our media; throws a SignallingError when refused. */
export async function connect() {
  const { link, displayName, localStream, micMuted } = current();
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const connection = new MeetingConnection({
    url: `${scheme}://${location.host}/ws${await nodeQuery(link.room, link.token)}`,
    token: link.token,
    room: link.room,
    name: displayName,
  });
  const joined = await connection.join();
  setConnection(connection, joined.you);
  wire(connection);
  for (const participant of joined.participants || []) upsertParticipant(participant);
  const audio = localStream.getAudioTracks()[0] || null;
  const video = localStream.getVideoTracks()[0] || null;
  setCameraOn(Boolean(video));
  if (link.grants.can_publish !== false && (audio || video)) {
    await connection.publish({ audio, video });
    if (audio && micMuted) {
      audio.enabled = false;
      connection.setMuted("audio", true);
    }
  }
}

function wire(connection) {
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
  connection.addEventListener("closed", (e) => onClosed(connection, e.detail));
}

function onClosed(connection, detail) {
  const { connection: live, phase } = current();
  if (connection !== live || phase === "leaving" || detail.byUs) return;
  if (FATAL.has(detail.code) && detail.code !== CloseCode.NORMAL) {
    leaveMeeting({ silent: true });
    showError(detail.error || closeError(detail.code));
    return;
  }
  reconnect();
}

async function reconnect() {
  if (current().phase === "reconnecting") return;
  setPhase("reconnecting");
  notify(t("error.connection_lost"), { sticky: true });
  document.documentElement.dataset.connection = "lost";
  removeParticipants({ keepYou: true });
  const policy = new ReconnectPolicy(RECONNECT);
  for (let delay = policy.next(); delay !== null; delay = policy.next()) {
    await sleep(delay);
    if (current().phase === "leaving") return;
    try {
      await connect();
      setPhase("meeting");
      document.documentElement.dataset.connection = "ok";
      notify(t("error.reconnected"), { brief: true });
      return;
    } catch (error) {
      if (error.code && ERROR_MESSAGES[error.code] && !["connection_failed", "timeout"].includes(error.code)) {
        leaveMeeting({ silent: true });
        showError(error.code);
        return;
      }
    }
  }
  leaveMeeting({ silent: true });
  showError("connection_failed", { retry: true });
}

/** Leaves the meeting: says so to the server (unless `silent`), stops media and captions. */
export function leaveMeeting({ silent = false } = {}) {
  const { connection, captionSocket, localStream } = current();
  setPhase("leaving");
  if (!silent) connection?.leave();
  else connection?.ws?.close(CloseCode.NORMAL);
  captionSocket?.stop();
  for (const track of localStream?.getTracks() || []) track.stop();
  removeParticipants();
}
