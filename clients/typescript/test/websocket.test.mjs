// Drives a live gateway's WebSocket calls through the SDK (run by tests/gateway/test_typescript_sdk.py).
//
//   SWITCHBOARD_GATEWAY_URL=http://127.0.0.1:8080 [SWITCHBOARD_TOKEN=<member jwt>]
//   [SWITCHBOARD_ADMIN_TOKEN=<jwt with messages.import>] node --test test/
//
// Node 20 has no global WebSocket: every call gets the `ws` package's.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { test } from 'node:test';

import WebSocket from 'ws';

import {
  WEBSOCKET_OPERATIONS,
  WebSocketCallError,
  chatServiceConverseWebSocket,
  chatServiceImportMessagesWebSocket,
  closeCodeFor,
  createSwitchboardClient,
  roomServiceCreateRoom,
} from '../dist/index.js';

const baseUrl = process.env.SWITCHBOARD_GATEWAY_URL;
if (!baseUrl) throw new Error('SWITCHBOARD_GATEWAY_URL must name the gateway, e.g. http://127.0.0.1:8080');
const token = process.env.SWITCHBOARD_TOKEN;
const client = createSwitchboardClient({ baseUrl, auth: token });
const LIMIT_MS = 10_000;

const roomId = () => `ws-${randomUUID().slice(0, 8)}`;

async function createRoom() {
  const id = roomId();
  const body = { displayName: 'WebSocket room' };
  await roomServiceCreateRoom({ client, query: { roomId: id }, body, throwOnError: true });
  return id;
}

function converse(room, options = {}) {
  return chatServiceConverseWebSocket({ client, path: { room }, WebSocket, ...options });
}

/** Resolves with `promise`, or fails the test naming `what` after LIMIT_MS. */
async function within(promise, what) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no ${what} within ${LIMIT_MS} ms`)), LIMIT_MS);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** The first response of `call` that `matches`, skipping the others (presence, own echoes…). */
async function next(call, what, matches) {
  return within(
    (async () => {
      for (;;) {
        const response = await call.receive();
        if (response === undefined) throw new Error(`the call ended before ${what}`);
        if (matches(response)) return response;
      }
    })(),
    what,
  );
}

/** Open a conversation and wait for its `subscribed` event. */
async function subscribed(room, options = {}) {
  const call = converse(room, options);
  call.send({}); // the first request: the room comes from the path
  const first = await within(call.receive(), 'subscribed event');
  assert.ok(first.event?.subscribed, `the first response is subscribed: ${JSON.stringify(first)}`);
  assert.equal(first.event.room, `rooms/${room}`);
  return call;
}

/** The error a promise rejects with (fails when it resolves). */
async function rejection(promise, what) {
  try {
    await within(promise, what);
  } catch (error) {
    return error;
  }
  assert.fail(`${what} did not fail`);
}

test('the SDK opens exactly the WebSocket operations the OpenAPI document describes', async () => {
  const file = new URL('../../../openapi/switchboard.openapi.json', import.meta.url);
  const document = JSON.parse(await readFile(file, 'utf8'));
  const described = [];
  for (const [path, item] of Object.entries(document.paths)) {
    for (const operation of Object.values(item)) {
      const cardinality = operation?.['x-grpc']?.cardinality;
      const streaming = ['bidi_streaming', 'client_streaming'].includes(cardinality);
      if (!operation?.['x-websocket'] || !streaming) continue;
      assert.ok(operation['x-websocket'].subprotocols.includes('switchboard.grpc.json.v1'));
      described.push({ method: operation['x-grpc'].method, path, cardinality });
    }
  }
  const sortByMethod = (list) => [...list].sort((a, b) => a.method.localeCompare(b.method));
  assert.deepEqual(sortByMethod(Object.values(WEBSOCKET_OPERATIONS)), sortByMethod(described));
  // gateway/docs/streaming.md "Close codes": OK 1000; UNAUTHENTICATED, PERMISSION_DENIED 1008;
  // INTERNAL, UNKNOWN, DATA_LOSS 1011; any other status 4000 + code.
  const codes = [0, 16, 7, 13, 2, 15, 5, 3, 8, 14].map((code) => closeCodeFor(code));
  assert.deepEqual(codes, [1000, 1008, 1008, 1011, 1011, 1011, 4005, 4003, 4008, 4014]);
  const documented = document.paths['/v1/rooms/{room}:converse'].get['x-websocket'].closeCodes;
  for (const code of [1000, 1008, 1011]) assert.ok(code in documented, `close ${code} is documented`);
});

test('two conversations in one room exchange typing and posts over WebSocket', async () => {
  const room = await createRoom();
  const alice = await subscribed(room);
  const bob = await subscribed(room);
  try {
    assert.match(alice.url, new RegExp(`^ws://[^/]+/v1/rooms/${room}:converse$`));
    if (token) assert.ok(!alice.url.includes(token), 'the token never rides in the URL');

    assert.equal(alice.send({ typing: { active: true } }), true);
    const typing = await next(bob, 'typing event', (r) => r.event?.typing);
    assert.equal(typing.event.typing.active, true);
    assert.equal(typing.event.room, `rooms/${room}`);
    if (token) assert.equal(typing.event.typing.user, 'sdk-user');

    bob.send({ post: { message: { text: 'hello from bob' }, requestId: 'bob-1' } });
    const ack = await next(bob, 'ack', (r) => r.ack);
    assert.equal(ack.ack.requestId, 'bob-1');
    assert.equal(ack.ack.error, undefined);
    assert.equal(ack.ack.message.text, 'hello from bob');
    assert.match(ack.ack.message.name, new RegExp(`^rooms/${room}/messages/`));
    const posted = await next(alice, "bob's message", (r) => r.event?.messagePosted);
    assert.equal(posted.event.messagePosted.name, ack.ack.message.name);
    assert.equal(posted.event.messagePosted.text, 'hello from bob');
    assert.match(posted.event.id, /.+/, 'a durable event carries its cursor');

    alice.send({ post: { message: { text: 'hi bob' }, requestId: 'alice-1' } });
    // bob sees his own post too (after its ack): wait for alice's
    const reply = await next(bob, "alice's message", (r) => r.event?.messagePosted?.text === 'hi bob');
    assert.ok(BigInt(reply.event.offset) > BigInt(posted.event.offset), 'offsets grow');
  } finally {
    alice.close();
    bob.close();
  }
  for (const call of [alice, bob]) {
    const end = await within(call.ended, 'end after close()');
    assert.equal(end.closeCode, 1000);
    assert.equal(end.status.code, 1, 'CANCELLED: the client ended it');
    assert.equal(end.error, undefined);
    assert.equal(await call.receive(), undefined, 'a closed call yields nothing more');
  }
});

test('a half-closed conversation keeps receiving the room and refuses to send', async () => {
  const room = await createRoom();
  const abort = new AbortController();
  const talker = await subscribed(room, { signal: abort.signal });
  const listener = await subscribed(room);
  const seen = [];
  try {
    listener.halfClose();
    listener.halfClose(); // idempotent: a second half-close frame would be a protocol error
    assert.throws(() => listener.send({ typing: { active: true } }), /after halfClose/);
    talker.send({ post: { message: { text: 'after the half-close' }, requestId: 't-1' } });
    for await (const response of listener) {
      seen.push(response);
      if (response.event?.messagePosted) break; // leaving the loop closes the call
    }
  } finally {
    abort.abort(); // closes the talker
  }
  assert.equal(seen.at(-1).event.messagePosted.text, 'after the half-close');
  for (const call of [listener, talker]) {
    const end = await within(call.ended, 'end after leaving the loop / abort');
    assert.equal(end.closeCode, 1000);
    assert.equal(end.status.code, 1);
  }
});

test('a conversation in a missing room ends with close 4005 and the NOT_FOUND Status', async () => {
  const room = roomId();
  const call = converse(room);
  call.send({});
  const received = [];
  const error = await rejection(
    (async () => {
      for await (const response of call) received.push(response);
    })(),
    'the end of the stream',
  );
  assert.ok(error instanceof WebSocketCallError, String(error));
  assert.deepEqual(received, []);
  assert.equal(error.closeCode, 4005);
  assert.equal(error.code, 5, 'NOT_FOUND');
  assert.equal(error.fromGateway, true);
  assert.match(error.status.message, new RegExp(`rooms/${room}`));
  assert.ok(error.status.details.some((detail) => detail['@type'].endsWith('google.rpc.ResourceInfo')));
  assert.equal(call.send({ typing: { active: true } }), false, 'nothing is sent once the call is over');
  const end = await call.ended;
  assert.equal(end.error, error);
  await assert.rejects(call.receive(), (again) => again === error);
});

test('a bad token is refused at the handshake with 401 and an UNAUTHENTICATED Status', async (t) => {
  if (!token) return t.skip('the gateway runs without auth');
  const bad = 'not.a.jwt';
  const call = chatServiceConverseWebSocket({ baseUrl, auth: bad, path: { room: roomId() }, WebSocket });
  call.send({});
  const error = await rejection(call.opened, 'refusal');
  assert.ok(error instanceof WebSocketCallError, String(error));
  assert.equal(error.httpStatus, 401);
  assert.equal(error.code, 16, 'UNAUTHENTICATED');
  assert.equal(error.fromGateway, true);
  assert.match(error.status.message, /token/);
  assert.equal(error.tokenExpired, false);
  assert.ok(!error.message.includes(bad) && !call.url.includes(bad), 'the token is never quoted');
  await assert.rejects(call.receive(), (again) => again === error);
  assert.equal((await call.ended).closeCode, 1006, 'no close frame: the socket never opened');

  // A browser's WebSocket hides the refusal: only the failed connection shows.
  class BrowserLike {
    #socket;
    constructor(url, protocols) {
      this.#socket = new WebSocket(url, protocols);
    }
    get readyState() {
      return this.#socket.readyState;
    }
    send(data) {
      this.#socket.send(data);
    }
    close(code, reason) {
      this.#socket.close(code, reason);
    }
    addEventListener(type, listener) {
      this.#socket.addEventListener(type, listener);
    }
  }
  const path = { room: roomId() };
  const hidden = chatServiceConverseWebSocket({ baseUrl, auth: bad, path, WebSocket: BrowserLike });
  const failed = await rejection(hidden.opened, 'refusal');
  assert.equal(failed.code, 14, 'UNAVAILABLE: the client cannot tell why');
  assert.equal(failed.closeCode, 1006);
  assert.equal(failed.httpStatus, undefined);
  assert.equal(failed.fromGateway, false);
});

test('ImportMessages over WebSocket refuses a member without messages.import (403)', async (t) => {
  if (!token) return t.skip('the gateway runs without auth');
  const call = chatServiceImportMessagesWebSocket({ client, path: { room: roomId() }, WebSocket });
  call.send({ message: { text: 'not allowed' } });
  call.halfClose();
  const error = await rejection(call.result(), 'refusal');
  assert.ok(error instanceof WebSocketCallError, String(error));
  assert.equal(error.httpStatus, 403);
  assert.equal(error.code, 7, 'PERMISSION_DENIED');
  assert.match(error.status.message, /messages\.import/);
});

test('ImportMessages over WebSocket answers the counts, then the stream ends with 1000', async (t) => {
  const admin = process.env.SWITCHBOARD_ADMIN_TOKEN;
  if (token && !admin) return t.skip('SWITCHBOARD_ADMIN_TOKEN (messages.import) is not set');
  const room = await createRoom();
  const importer = createSwitchboardClient({ baseUrl, auth: admin });
  const call = chatServiceImportMessagesWebSocket({ client: importer, path: { room }, WebSocket });
  for (const [index, text] of ['one', 'two', 'three'].entries()) {
    assert.equal(call.send({ message: { text }, requestId: `import-${index}` }), true);
  }
  call.send({ message: { text: 'one again' }, requestId: 'import-0' }); // a duplicate
  call.halfClose();
  const responses = [];
  await within(
    (async () => {
      for await (const response of call) responses.push(response); // ends at the server's OK
    })(),
    'the end of the import',
  );
  assert.deepEqual(responses.length, 1);
  assert.equal(responses[0].importedCount, '3');
  assert.equal(responses[0].duplicateCount, '1');
  assert.equal(BigInt(responses[0].lastOffset) - BigInt(responses[0].firstOffset), 2n);
  const end = await call.ended;
  assert.equal(end.closeCode, 1000);
  assert.equal(end.status.code, 0);
  assert.equal(end.error, undefined);
});
