// The /captions WebSocket (docs/captions-api.md): authenticates with an `auth` message
// (so the token stays out of URLs and server logs), then receives hello, backlog,
// room_state (the room's one caption state) and live caption events; a host sends its
// caption changes here too. Reconnects (reconnect.js) unless the token itself was
// refused; the backlog after a reconnect refills whatever was missed.
//
// Events: state {state: "connecting"|"open"|"closed"|"refused", code}, hello, backlog,
// room_state, caption, transcript_deleted, error (detail = the message).

import { CloseCode, REFUSED } from "./closecodes.js";
import { ReconnectPolicy } from "./reconnect.js";

const PING_MS = 20000;

export class CaptionSocket extends EventTarget {
  // `url`: the socket's URL, or an async function giving it anew for every connection
  // (in a cluster the room's node may change between two connections).
  constructor({ url, token }) {
    super();
    this.url = url;
    this.token = token;
    this.ws = null;
    this.stopped = false;
    this.backoff = new ReconnectPolicy({ baseMs: 500, maxMs: 10000 });
    this.pingTimer = null;
    this.retryTimer = null;
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  start() {
    this.stopped = false;
    this.open();
  }

  async open() {
    this.emit("state", { state: "connecting" });
    let url = this.url;
    if (typeof url === "function") {
      try {
        url = await url();
      } catch {
        if (!this.stopped) this.retryTimer = setTimeout(() => this.open(), this.backoff.next());
        return;
      }
    }
    if (this.stopped) return;
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.addEventListener("open", () => {
      ws.send(JSON.stringify({ type: "auth", token: this.token }));
      this.pingTimer = setInterval(() => {
        if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "ping" }));
      }, PING_MS);
    });
    ws.addEventListener("message", (message) => {
      let data;
      try {
        data = JSON.parse(message.data);
      } catch {
        return;
      }
      if (!data || typeof data.type !== "string") return;
      if (data.type === "hello") {
        this.backoff.reset();
        this.emit("state", { state: "open" });
      }
      if (["hello", "backlog", "room_state", "caption", "transcript_deleted", "error"].includes(data.type)) {
        this.emit(data.type, data);
      }
    });
    ws.addEventListener("close", (event) => {
      clearInterval(this.pingTimer);
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.stopped) return;
      if (REFUSED.has(event.code)) {
        this.emit("state", { state: "refused", code: event.code, reason: event.reason });
        return;
      }
      this.emit("state", { state: "closed", code: event.code });
      this.retryTimer = setTimeout(() => this.open(), this.backoff.next());
    });
  }

  /** Host only (checked on the server): captions on or off for the whole room. */
  setCaptions(enabled) {
    this.send({ type: "set_captions", enabled });
  }

  /** Host only (checked on the server): the room's caption language. */
  setLanguage(language) {
    this.send({ type: "set_language", language });
  }

  send(message) {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearInterval(this.pingTimer);
    this.ws?.close(CloseCode.NORMAL);
    this.ws = null;
  }
}
