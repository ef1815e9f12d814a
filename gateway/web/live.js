// The two live connections of an open room:
//
// RoomFeed — Server-Sent Events on ChatService.Subscribe (token: the session cookie, since
// EventSource cannot send headers). The durable events (messages posted, edited, deleted)
// come from here. After a drop EventSource reconnects by itself with Last-Event-ID; if it gives
// up (an HTTP error) RoomFeed opens a new one with ?last_event_id=, backing off. Every
// subscription starts with `subscribed`: recovered false means "reload history".
//
// Conversation — a WebSocket on ChatService.Converse (token: the `bearer, <token>`
// subprotocol, else the cookie). Typing signals go out here; presence (member joined/left)
// and typing events come in. It reconnects after a drop, backing off.

import { statusError } from "./api.js";

const JSON_FRAMES = "switchboard.grpc.json.v1";
const DURABLE = ["message_posted", "message_edited", "message_deleted"];
const MAX_BACKOFF_MS = 15000;
const GIVE_UP_CODES = new Set([5, 7, 16]); // NOT_FOUND, PERMISSION_DENIED, UNAUTHENTICATED

function backoff(attempt) {
  return Math.min(MAX_BACKOFF_MS, 1000 * 2 ** attempt);
}

export class RoomFeed {
  // on: { subscribed(recovered, reconnected), event(kind, roomEvent), state(name), error(err), gaveUp() }
  constructor(room, on) {
    this.room = room;
    this.on = on;
    this.lastEventId = "";
    this.source = null;
    this.attempt = 0;
    this.everSubscribed = false;
    this.timer = 0;
    this.closed = false;
  }

  open() {
    const url = new URL(`/v1/${this.room}:subscribe`, location.origin);
    if (this.lastEventId) url.searchParams.set("last_event_id", this.lastEventId);
    const source = new EventSource(url);
    this.source = source;
    this.on.state("connecting");
    source.addEventListener("subscribed", (e) => this.subscribed(e));
    for (const kind of DURABLE) {
      source.addEventListener(kind, (e) => {
        this.lastEventId = e.lastEventId || this.lastEventId;
        this.on.event(kind, JSON.parse(e.data));
      });
    }
    source.addEventListener("error", (e) => this.failed(source, e));
  }

  subscribed(e) {
    this.lastEventId = e.lastEventId || this.lastEventId;
    const { subscribed } = JSON.parse(e.data);
    const reconnected = this.everSubscribed;
    this.everSubscribed = true;
    this.attempt = 0;
    this.on.state("live");
    this.on.subscribed(Boolean(subscribed?.recovered), reconnected);
  }

  failed(source, e) {
    if (this.closed || source !== this.source) return;
    if (e instanceof MessageEvent && e.data) {
      this.on.error(statusError(JSON.parse(e.data))); // `event: error`: the stream ends next
    }
    if (source.readyState === EventSource.CLOSED) {
      this.on.state("reconnecting");
      this.on.gaveUp();
      this.timer = setTimeout(() => this.closed || this.open(), backoff(this.attempt++));
    } else {
      this.on.state("reconnecting"); // EventSource retries by itself, with Last-Event-ID
    }
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    this.source?.close();
    this.on.state("closed");
  }
}

export class Conversation {
  // on: { open(), event(roomEvent), error(err) }
  constructor(room, token, on) {
    this.room = room;
    this.token = token;
    this.on = on;
    this.socket = null;
    this.attempt = 0;
    this.timer = 0;
    this.closed = false;
  }

  open() {
    const url = new URL(`/v1/${this.room}:converse`, location.origin);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    const protocols = this.token ? [JSON_FRAMES, "bearer", this.token] : [JSON_FRAMES];
    const socket = new WebSocket(url, protocols);
    this.socket = socket;
    let status = null;
    socket.addEventListener("open", () => {
      socket.send(JSON.stringify({ message: {} })); // the first request: the room, from the path
      this.attempt = 0;
      this.on.open();
    });
    socket.addEventListener("message", (e) => {
      const frame = JSON.parse(e.data);
      if (frame.result?.event) this.on.event(frame.result.event);
      if (frame.status) status = frame.status;
    });
    socket.addEventListener("close", () => this.dropped(socket, status));
  }

  dropped(socket, status) {
    if (this.closed || socket !== this.socket) return;
    if (status && status.code !== 0) this.on.error(statusError(status));
    if (status && GIVE_UP_CODES.has(status.code)) return;
    this.timer = setTimeout(() => this.closed || this.open(), backoff(this.attempt++));
  }

  typing(active) {
    if (this.socket?.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify({ message: { typing: { active } } }));
    }
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    this.socket?.close(1000);
  }
}
