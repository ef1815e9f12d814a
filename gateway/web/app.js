// The chat page: sign in with a token, pick or create a room, read and post messages live.
//
// The token is kept in sessionStorage (this tab only) for the REST calls' Authorization
// header; POST /auth/session turns it into the HttpOnly cookie that EventSource sends. A
// `#token=…` fragment signs in and is removed from the address bar at once.
// Messages are shown oldest first, keyed by resource name and ordered by stream offset, so a
// message that arrives twice (history and live, or a post's answer and its event) shows once.

import { Api, newRequestId } from "./api.js";
import { Conversation, RoomFeed } from "./live.js";

const TOKEN_KEY = "switchboard.token";
const TYPING_IDLE_MS = 3000; // after this long without a keystroke we say we stopped typing
const TYPING_SHOWN_MS = 6000; // someone else's typing shows this long without news
const $ = (id) => document.getElementById(id);

let api = null;
let me = "";
let current = null; // the open RoomView

function showError(error) {
  $("error-text").textContent = error instanceof Error ? error.message : String(error);
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
}

function hashParams() {
  return new URLSearchParams(location.hash.slice(1));
}

function setHash(params) {
  const text = params.toString();
  history.replaceState(null, "", location.pathname + location.search + (text ? `#${text}` : ""));
}

// --- signing in and out ----------------------------------------------------------------------

async function signIn(token) {
  const candidate = new Api(token);
  let session;
  try {
    session = await candidate.signIn();
  } catch (error) {
    sessionStorage.removeItem(TOKEN_KEY);
    showError(error);
    showSignIn();
    return;
  }
  clearError();
  api = candidate;
  me = session.user ?? "";
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  $("user").textContent = session.authentication === "off" ? "anyone (auth is off)" : me;
  $("who").hidden = false;
  $("sign-in").hidden = true;
  $("chat").hidden = false;
  await loadRooms();
  const room = hashParams().get("room");
  if (room) openRoom(`rooms/${room}`);
}

function showSignIn() {
  $("who").hidden = true;
  $("chat").hidden = true;
  $("sign-in").hidden = false;
  $("token").focus();
}

async function signOut() {
  current?.close();
  current = null;
  try {
    await api?.signOut();
  } catch (error) {
    showError(error);
  }
  api = null;
  $("room").hidden = true;
  sessionStorage.removeItem(TOKEN_KEY);
  setHash(new URLSearchParams());
  showSignIn();
}

// --- rooms -----------------------------------------------------------------------------------

async function loadRooms() {
  const rooms = [];
  let pageToken = "";
  try {
    do {
      const page = await api.listRooms(pageToken);
      rooms.push(...(page.rooms ?? []));
      pageToken = page.nextPageToken ?? "";
    } while (pageToken && rooms.length < 1000);
  } catch (error) {
    showError(error);
  }
  $("room-list").replaceChildren(...rooms.map((room) => roomItem(room.name)));
  markCurrentRoom();
}

function roomItem(name) {
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = name.slice("rooms/".length);
  button.dataset.room = name;
  button.addEventListener("click", () => openRoom(name));
  const item = document.createElement("li");
  item.append(button);
  return item;
}

function markCurrentRoom() {
  for (const button of $("room-list").querySelectorAll("button")) {
    button.setAttribute("aria-current", String(button.dataset.room === current?.room));
  }
}

async function createRoom(roomId) {
  try {
    const room = await api.createRoom(roomId);
    $("room-id").value = "";
    clearError();
    await loadRooms();
    openRoom(room.name);
  } catch (error) {
    showError(error);
  }
}

function openRoom(name) {
  if (current?.room === name) return;
  current?.close();
  current = new RoomView(name);
  const params = hashParams();
  params.set("room", name.slice("rooms/".length));
  setHash(params);
  markCurrentRoom();
  current.open();
}

// --- one open room ---------------------------------------------------------------------------

class RoomView {
  constructor(room) {
    this.room = room;
    this.closed = false;
    this.olderToken = "";
    this.members = new Set();
    this.membersAsked = 0;
    this.typers = new Map(); // user → timer clearing their indicator
    this.typingSent = false;
    this.typingTimer = 0;
    this.pending = null; // { text, requestId }: a failed post is retried with the same id
    this.feed = new RoomFeed(room, {
      subscribed: (recovered, reconnected) => this.subscribed(recovered, reconnected),
      event: (kind, event) => this.durable(kind, event),
      state: (state) => this.showState(state),
      error: (error) => this.alive() && showError(error),
      gaveUp: () => this.probe(),
    });
    this.talk = new Conversation(room, api.token, {
      open: () => this.loadMembers(),
      event: (event) => this.ephemeral(event),
      error: (error) => this.alive() && showError(error),
    });
  }

  alive() {
    return !this.closed && current === this;
  }

  open() {
    $("room").hidden = false;
    $("room-title").textContent = this.room.slice("rooms/".length);
    $("messages").replaceChildren();
    $("member-list").replaceChildren();
    $("typing").textContent = "";
    $("load-older").hidden = true;
    Object.assign($("status").dataset, { resumed: "0", reloaded: "0" });
    this.feed.open();
    this.talk.open();
    this.loadMembers(); // again when the conversation opens (a viewer may not converse)
  }

  close() {
    this.closed = true;
    this.stopTyping();
    for (const timer of this.typers.values()) clearTimeout(timer);
    this.feed.close();
    this.talk.close();
  }

  showState(state) {
    if (!this.alive()) return;
    const words = { connecting: "connecting…", live: "live", reconnecting: "reconnecting…" };
    $("status").dataset.state = state;
    $("status").textContent = words[state] ?? "";
  }

  // History: after every subscription that did not recover the missed events.
  subscribed(recovered, reconnected) {
    if (!this.alive()) return;
    if (recovered) {
      bump("resumed");
    } else {
      if (reconnected) bump("reloaded");
      this.reloadHistory();
    }
  }

  async reloadHistory() {
    $("messages").replaceChildren();
    this.olderToken = "";
    await this.loadPage("");
  }

  async loadPage(pageToken) {
    try {
      const page = await api.listMessages(this.room, pageToken);
      if (!this.alive()) return;
      for (const message of page.messages ?? []) this.place(message);
      this.olderToken = page.nextPageToken ?? "";
      $("load-older").hidden = !this.olderToken;
      if (!pageToken) scrollToEnd();
    } catch (error) {
      showError(error);
    }
  }

  loadOlder() {
    if (this.olderToken) this.loadPage(this.olderToken);
  }

  async probe() {
    try {
      await api.listMessages(this.room, "", 1); // says why the live feed was refused, if it was
    } catch (error) {
      if (this.alive()) showError(error);
    }
  }

  durable(kind, event) {
    if (!this.alive()) return;
    if (kind === "message_deleted") {
      document.querySelector(`#messages li[data-name="${CSS.escape(event.messageDeleted.name)}"]`)?.remove();
      return;
    }
    const message = kind === "message_posted" ? event.messagePosted : event.messageEdited;
    const follow = nearEnd();
    this.place(message);
    if (follow) scrollToEnd();
  }

  place(message) {
    const list = $("messages");
    let item = list.querySelector(`li[data-name="${CSS.escape(message.name)}"]`);
    if (!item) {
      item = document.createElement("li");
      item.dataset.name = message.name;
      item.dataset.offset = message.offset ?? "0";
      list.insertBefore(item, firstAfter(list, Number(item.dataset.offset)));
    }
    const time = document.createElement("time");
    time.dateTime = message.createTime ?? "";
    time.textContent = message.createTime
      ? new Date(message.createTime).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
      : "";
    const sender = Object.assign(document.createElement("span"), { className: "sender" });
    sender.textContent = message.sender || "anonymous";
    const text = Object.assign(document.createElement("span"), { className: "text" });
    text.textContent = message.text ?? "";
    item.replaceChildren(time, sender, text);
    item.classList.toggle("mine", Boolean(me) && message.sender === me);
  }

  async post(text) {
    const requestId = this.pending?.text === text ? this.pending.requestId : newRequestId();
    this.pending = { text, requestId };
    this.stopTyping();
    try {
      const message = await api.postMessage(this.room, text, requestId);
      this.pending = null;
      $("message-text").value = "";
      if (this.alive()) {
        this.place(message);
        scrollToEnd();
      }
    } catch (error) {
      showError(error);
    }
  }

  // --- presence and typing (the Converse WebSocket) ---

  async loadMembers() {
    const asked = ++this.membersAsked; // answers can cross: only the latest one counts
    try {
      const { members = [] } = await api.listMembers(this.room);
      if (!this.alive() || asked !== this.membersAsked) return;
      this.members = new Set(members.map((member) => member.user));
      this.showMembers();
    } catch (error) {
      if (this.alive()) showError(error);
    }
  }

  ephemeral(event) {
    if (!this.alive()) return;
    if (event.memberJoined) this.members.add(event.memberJoined.user);
    if (event.memberLeft) this.members.delete(event.memberLeft.user);
    if (event.memberJoined || event.memberLeft) this.showMembers();
    if (event.typing && event.typing.user !== me) this.someoneTyping(event.typing.user, Boolean(event.typing.active));
  }

  showMembers() {
    // This page's own subscription makes its user present; a list fetched a moment before the
    // service counted it (or a member_joined sent before the conversation opened) still shows them.
    const present = new Set(me ? [...this.members, me] : this.members);
    const items = [...present].sort().map((user) => {
      const item = document.createElement("li");
      item.textContent = user === me ? `${user} (you)` : user || "anonymous";
      return item;
    });
    $("member-list").replaceChildren(...items);
  }

  someoneTyping(user, active) {
    clearTimeout(this.typers.get(user));
    this.typers.delete(user);
    if (active) this.typers.set(user, setTimeout(() => this.someoneTyping(user, false), TYPING_SHOWN_MS));
    const users = [...this.typers.keys()].sort();
    $("typing").textContent = users.length === 0 ? ""
      : users.length === 1 ? `${users[0]} is typing…`
      : `${users.slice(0, -1).join(", ")} and ${users.at(-1)} are typing…`;
  }

  keystroke() {
    if (!this.typingSent) {
      this.typingSent = true;
      this.talk.typing(true);
    }
    clearTimeout(this.typingTimer);
    this.typingTimer = setTimeout(() => this.stopTyping(), TYPING_IDLE_MS);
  }

  stopTyping() {
    clearTimeout(this.typingTimer);
    if (this.typingSent) {
      this.typingSent = false;
      this.talk.typing(false);
    }
  }
}

function bump(counter) {
  const status = $("status");
  status.dataset[counter] = String(Number(status.dataset[counter]) + 1);
}

function firstAfter(list, offset) {
  for (let item = list.lastElementChild; item; item = item.previousElementSibling) {
    if (Number(item.dataset.offset) <= offset) return item.nextElementSibling;
  }
  return list.firstElementChild;
}

function nearEnd() {
  const box = $("history");
  return box.scrollHeight - box.scrollTop - box.clientHeight < 40;
}

function scrollToEnd() {
  const box = $("history");
  box.scrollTop = box.scrollHeight;
}

// --- wiring ----------------------------------------------------------------------------------

function submitted(form, handler) {
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    handler();
  });
}

function start() {
  submitted($("sign-in-form"), () => signIn($("token").value.trim()).then(() => ($("token").value = "")));
  submitted($("create-room-form"), () => createRoom($("room-id").value.trim()));
  submitted($("post-form"), () => {
    const text = $("message-text").value;
    if (text.trim() && current) current.post(text);
  });
  $("message-text").addEventListener("input", () => current?.keystroke());
  $("load-older").addEventListener("click", () => current?.loadOlder());
  $("sign-out").addEventListener("click", signOut);
  $("error-close").addEventListener("click", clearError);

  const params = hashParams();
  const linked = params.get("token");
  if (linked !== null) {
    params.delete("token"); // out of the address bar and history at once
    setHash(params);
    sessionStorage.setItem(TOKEN_KEY, linked);
  }
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token !== null) signIn(token);
  else showSignIn();
}

start();
