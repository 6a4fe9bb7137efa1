// Client side of the SFU signalling protocol (docs/signalling.md): one WebSocket, a
// publisher peer connection (we offer) and a subscriber peer connection (the SFU offers).
//
// Events (a plain EventTarget, detail in event.detail):
//   joined {room, you, participants}
//   participant_joined {participant}, participant_left {identity, name},
//   participant_updated {participant}
//   track {identity, name, kind, track, stream}  a remote track started
//   track_ended {identity, kind}                 its slot became inactive
//   server_error {code, message, request}        an error reply that leaves us connected
//   media_connected {pc}                         a peer connection connected: media flows
//   media_failed {pc}                            a peer connection failed
//   closed {code, reason, error, byUs, mediaFailed}  the socket closed (error: last error
//                                                code; mediaFailed: one of ours failed first)

import { CloseCode, closeError } from "./closecodes.js";

const ICE_WAIT_MS = 2000;
const JOIN_TIMEOUT_MS = 10000;

export class SignallingError extends Error {
  constructor(code, message) {
    super(message || code);
    this.code = code;
  }
}

export class MeetingConnection extends EventTarget {
  constructor({ url, token, room, name }) {
    super();
    this.url = url;
    this.token = token;
    this.room = room;
    this.name = name;
    this.ws = null;
    this.publisher = null;
    this.subscriber = null;
    this.pendingAnswer = null;
    this.subscriberTracks = new Map(); // mid -> {identity, name, kind, active}
    this.lastError = null;
    this.closedByUs = false;
    this.mediaConnected = false;
    this.mediaFailed = false;
    this.subscriberChain = Promise.resolve();
  }

  /** Opens the socket and joins; resolves with the `joined` message, rejects with SignallingError. */
  join() {
    return new Promise((resolve, reject) => {
      let settled = false;
      const fail = (code, message) => {
        if (settled) return;
        settled = true;
        reject(new SignallingError(code, message));
      };
      const timer = setTimeout(() => {
        fail("timeout", "no answer from the server");
        this.ws?.close();
      }, JOIN_TIMEOUT_MS);
      let ws;
      try {
        ws = new WebSocket(this.url);
      } catch (error) {
        clearTimeout(timer);
        fail("connection_failed", String(error));
        return;
      }
      this.ws = ws;
      ws.addEventListener("open", () => {
        const join = { type: "join", token: this.token, room: this.room };
        // Unknown fields are ignored by servers that do not let the name be changed.
        if (this.name) join.name = this.name;
        this.send(join);
      });
      ws.addEventListener("message", (message) => {
        let data;
        try {
          data = JSON.parse(message.data);
        } catch {
          return;
        }
        if (!settled && data.type === "joined") {
          settled = true;
          clearTimeout(timer);
          resolve(data);
        }
        if (!settled && data.type === "error") {
          this.lastError = data.code;
          clearTimeout(timer);
          fail(data.code, data.message);
          return;
        }
        this.handle(data);
      });
      ws.addEventListener("close", (event) => {
        clearTimeout(timer);
        if (!settled) fail(this.lastError || closeError(event.code), event.reason);
        // A publish waiting for its answer ends too (a rejoin must not hang on it).
        this.pendingAnswer?.reject(new SignallingError(event.code === CloseCode.MEDIA_LOST ? "media_blocked" : closeError(event.code), event.reason));
        this.pendingAnswer = null;
        this.closePeers();
        this.emit("closed", {
          code: event.code,
          reason: event.reason,
          error: this.lastError,
          byUs: this.closedByUs,
          mediaFailed: this.mediaFailed,
        });
      });
    });
  }

  send(message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  handle(data) {
    switch (data.type) {
      case "joined":
        this.emit("joined", data);
        break;
      case "participant_joined":
      case "participant_left":
      case "participant_updated":
        this.emit(data.type, data);
        break;
      case "offer":
        // Subscriber offers are applied one at a time, in order.
        this.subscriberChain = this.subscriberChain
          .then(() => this.onSubscriberOffer(data))
          .catch((error) => console.warn("subscriber renegotiation failed", error));
        break;
      case "answer":
        if (this.pendingAnswer) {
          this.pendingAnswer.resolve(data.sdp);
          this.pendingAnswer = null;
        }
        break;
      case "error":
        this.lastError = data.code;
        if (data.request === "offer" && this.pendingAnswer) {
          this.pendingAnswer.reject(new SignallingError(data.code, data.message));
          this.pendingAnswer = null;
        }
        this.emit("server_error", data);
        break;
      default:
        break;
    }
  }

  /** Publishes the given tracks (microphone and/or camera) on the publisher connection. */
  async publish({ audio = null, video = null } = {}) {
    if (!this.publisher) {
      this.publisher = new RTCPeerConnection({ iceServers: [] });
      this.watchMedia(this.publisher, "publisher");
    }
    for (const [kind, track] of [["audio", audio], ["video", video]]) {
      if (!track) continue;
      const existing = this.transceiver(kind);
      if (existing) await existing.sender.replaceTrack(track);
      else this.publisher.addTransceiver(track, { direction: "sendonly" });
    }
    await this.negotiatePublisher();
  }

  /** Reports `pc` connecting (media flows: the first time only) or failing. */
  watchMedia(pc, name) {
    pc.addEventListener("connectionstatechange", () => {
      if (pc.connectionState === "connected" && !this.mediaConnected) {
        this.mediaConnected = true;
        this.emit("media_connected", { pc: name });
      }
      if (pc.connectionState === "failed" && !this.mediaFailed) {
        this.mediaFailed = true;
        this.emit("media_failed", { pc: name });
      }
    });
  }

  transceiver(kind) {
    return this.publisher?.getTransceivers().find((t) => t.sender.track?.kind === kind || t.receiver.track?.kind === kind) || null;
  }

  async negotiatePublisher() {
    const pc = this.publisher;
    await pc.setLocalDescription(await pc.createOffer());
    await iceGathered(pc);
    const tracks = {};
    for (const transceiver of pc.getTransceivers()) {
      if (transceiver.mid !== null) tracks[transceiver.mid] = transceiver.receiver.track.kind;
    }
    const answer = new Promise((resolve, reject) => {
      this.pendingAnswer = { resolve, reject };
    });
    this.send({ type: "offer", sdp: pc.localDescription.sdp, tracks });
    await pc.setRemoteDescription({ type: "answer", sdp: await answer });
  }

  /** Swaps the camera or microphone track without renegotiating (null stops sending). */
  async replaceTrack(kind, track) {
    const transceiver = this.transceiver(kind);
    if (transceiver) {
      await transceiver.sender.replaceTrack(track);
      return true;
    }
    if (track) await this.publish({ [kind]: track });
    return Boolean(track);
  }

  setMuted(kind, muted) {
    this.send({ type: "mute", kind, muted });
  }


  async onSubscriberOffer(data) {
    if (!this.subscriber) {
      this.subscriber = new RTCPeerConnection({ iceServers: [] });
      this.subscriber.addEventListener("track", (event) => this.onTrack(event));
      this.watchMedia(this.subscriber, "subscriber");
    }
    const pc = this.subscriber;
    const previous = this.subscriberTracks;
    this.subscriberTracks = new Map((data.tracks || []).map((t) => [String(t.mid), t]));
    await pc.setRemoteDescription({ type: "offer", sdp: data.sdp });
    await pc.setLocalDescription(await pc.createAnswer());
    await iceGathered(pc);
    this.send({ type: "answer", sdp: pc.localDescription.sdp });
    for (const [mid, info] of previous) {
      const now = this.subscriberTracks.get(mid);
      if (info.active && (!now || !now.active || now.identity !== info.identity)) {
        this.emit("track_ended", { identity: info.identity, kind: info.kind, mid });
      }
    }
    // A reused m-line may carry a new participant without a new `track` event.
    for (const transceiver of pc.getTransceivers()) {
      const info = this.subscriberTracks.get(String(transceiver.mid));
      const before = previous.get(String(transceiver.mid));
      if (info?.active && before && (!before.active || before.identity !== info.identity)) {
        this.emitTrack(info, transceiver.receiver.track);
      }
    }
  }

  onTrack(event) {
    const info = this.subscriberTracks.get(String(event.transceiver.mid));
    if (info && info.active) this.emitTrack(info, event.track);
  }

  emitTrack(info, track) {
    this.emit("track", { identity: info.identity, name: info.name, kind: info.kind, mid: info.mid, track });
  }

  closePeers() {
    this.publisher?.close();
    this.subscriber?.close();
    this.publisher = null;
    this.subscriber = null;
  }

  leave() {
    this.closedByUs = true;
    this.send({ type: "leave" });
    this.ws?.close(CloseCode.NORMAL);
    this.closePeers();
  }
}

/** Waits until ICE gathering completes (the SFU does not trickle), at most ICE_WAIT_MS. */
function iceGathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      pc.removeEventListener("icegatheringstatechange", check);
      clearTimeout(timer);
      resolve();
    };
    const check = () => {
      if (pc.iceGatheringState === "complete") done();
    };
    const timer = setTimeout(done, ICE_WAIT_MS);
    pc.addEventListener("icegatheringstatechange", check);
  });
}
