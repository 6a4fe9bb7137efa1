// The meeting connection (signalling.js): join, publish our media, follow participants
// and tracks, reconnect with the page's one policy (reconnect.js), leave.
//
// A rejoin has recovered once media flows again (a peer connection connected), not when
// signalling answers: a user whose network blocks UDP joins fine, then loses media each
// time ICE fails. So one policy counts every (re)join since media last flowed; after its
// last attempt the page stops and says whether the server or media could not be reached.
// A join with no media to carry (nobody publishing, nothing to publish) counts as
// recovered at once.
//
// Giving up because media cannot get through does not leave the meeting: captions have
// their own socket (TCP), and for a viewer who reads them they are the point. The page
// stays in a captions-only state until "Try again" (a full rejoin) or "Leave".

import { CloseCode, closeError, FATAL } from "./closecodes.js";
import { t } from "./i18n.js";
import { ReconnectPolicy, sleep } from "./reconnect.js";
import { reopenDevices } from "./join.js";
import { ERROR_MESSAGES, hideCaptionsOnly, notify, onServerError, showCaptionsOnly, showError } from "./screens.js";
import { nodeQuery } from "./nodes.js";
import { MeetingConnection } from "./signalling.js";
import { current, setCameraOn, setConnection, setLocalMedia, setPhase } from "./store.js";
import { attachLocal, attachTrack, detachTrack, removeParticipant, removeParticipants, upsertParticipant } from "./tiles.js";

// About 1, 2, 4, 8 and 10 s (less jitter), then the page gives up and offers "Try again".
const RECONNECT = { baseMs: 1000, maxMs: 10000, maxAttempts: 5 };

// Errors of a rejoin that another rejoin may not have.
const RETRYABLE = new Set(["connection_failed", "timeout", "media_blocked"]);

let policy = new ReconnectPolicy(RECONNECT);
// True from "connection lost" until the page announces the recovery.
let recovering = false;
// The devices captions-only stopped ({kind, deviceId}), opened again by "Try again".
let stoppedDevices = [];

/** Replaces the rejoin policy's options (tests use short delays); resets its count. */
export function configureReconnect(options) {
  policy = new ReconnectPolicy({ ...RECONNECT, ...options });
}

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
  const others = joined.participants || [];
  let carriesMedia = link.grants.can_subscribe !== false && others.some((p) => p.audio?.published || p.video?.published);
  if (link.grants.can_publish !== false && (audio || video)) {
    carriesMedia = true;
    await connection.publish({ audio, video });
    if (audio && micMuted) {
      audio.enabled = false;
      connection.setMuted("audio", true);
    }
  }
  if (!carriesMedia || connection.mediaConnected) recovered(connection);
}

/** Media flows on the live connection (or it has none to carry): the policy starts afresh. */
function recovered(connection) {
  if (connection !== current().connection) return;
  policy.reset();
  if (!recovering) return;
  recovering = false;
  document.documentElement.dataset.connection = "ok";
  notify(t("error.reconnected"), { brief: true });
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
  connection.addEventListener("media_connected", () => recovered(connection));
  connection.addEventListener("media_failed", () => connection.ws?.close(CloseCode.MEDIA_FAILED, "media failed"));
  connection.addEventListener("closed", (e) => onClosed(connection, e.detail));
}

function onClosed(connection, detail) {
  const { connection: live, phase } = current();
  if (connection !== live || phase === "leaving" || detail.byUs) return;
  // Our own close after a failed peer connection may come back as any code.
  const mediaLost = detail.mediaFailed || detail.code === CloseCode.MEDIA_LOST;
  if (!mediaLost && FATAL.has(detail.code) && detail.code !== CloseCode.NORMAL) {
    leaveMeeting({ silent: true });
    showError(detail.error || closeError(detail.code));
    return;
  }
  reconnect(mediaLost ? "media_blocked" : "connection_failed");
}

/** Rejoins until one succeeds; `failure` is the error shown if the policy gives up
 * (media_blocked: the page stays for captions only); `notice` says what happens meanwhile. */
async function reconnect(failure, notice = "error.connection_lost") {
  if (current().phase === "reconnecting") return;
  setPhase("reconnecting");
  recovering = true;
  notify(t(notice), { sticky: true });
  document.documentElement.dataset.connection = "lost";
  removeParticipants({ keepYou: true });
  for (let delay = policy.next(); delay !== null; delay = policy.next()) {
    await sleep(delay);
    if (current().phase === "leaving") return;
    try {
      await connect();
      // Closed before we got here (its close found us still reconnecting): try again.
      if (current().connection?.ws?.readyState !== WebSocket.OPEN) continue;
      // The meeting is back; "reconnected" waits for media (recovered()).
      setPhase("meeting");
      return;
    } catch (error) {
      if (error.code && ERROR_MESSAGES[error.code] && !RETRYABLE.has(error.code)) {
        leaveMeeting({ silent: true });
        showError(error.code);
        return;
      }
      failure = error.code === "media_blocked" ? "media_blocked" : "connection_failed";
    }
  }
  if (failure === "media_blocked") {
    enterCaptionsOnly();
    return;
  }
  leaveMeeting({ silent: true });
  showError(failure, { retry: true });
}

/** Media cannot get through: ends the media and signalling (no more rejoins) and stops
 * our camera and microphone, but keeps the captions socket and the meeting screen. */
function enterCaptionsOnly() {
  const { connection, localStream, you } = current();
  connection?.leave();
  // A late event of the old connection is then nobody's (see onClosed, recovered).
  setConnection(null, you);
  stoppedDevices = localStream.getTracks().map((track) => ({ kind: track.kind, deviceId: track.getSettings().deviceId }));
  for (const track of localStream.getTracks()) track.stop();
  setLocalMedia({ localStream: new MediaStream() });
  attachLocal();
  setPhase("captions-only");
  document.documentElement.dataset.connection = "captions-only";
  notify("", { sticky: true }); // "Connection lost" gives way to the lasting notice
  showCaptionsOnly(tryMediaAgain);
}

/** "Try again" in captions-only: the same devices, a full rejoin, a fresh policy. */
async function tryMediaAgain() {
  hideCaptionsOnly();
  const localStream = await reopenDevices(stoppedDevices);
  if (current().phase !== "captions-only") {
    // Left while the devices opened.
    for (const track of localStream.getTracks()) track.stop();
    return;
  }
  setLocalMedia({ localStream });
  attachLocal();
  policy.reset();
  reconnect("media_blocked", "captions_only.retrying");
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
