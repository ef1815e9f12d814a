// Drives a live gateway through the generated SDK (run by tests/gateway/test_typescript_sdk.py).
//
//   SWITCHBOARD_GATEWAY_URL=http://127.0.0.1:8080 [SWITCHBOARD_TOKEN=<jwt>] node --test test/
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test } from 'node:test';

import {
  chatServiceListMessages,
  chatServicePostMessage,
  chatServiceSubscribe,
  createSwitchboardClient,
  roomServiceCreateRoom,
  roomServiceGetRoom,
} from '../dist/index.js';

const baseUrl = process.env.SWITCHBOARD_GATEWAY_URL;
if (!baseUrl) throw new Error('SWITCHBOARD_GATEWAY_URL must name the gateway, e.g. http://127.0.0.1:8080');
const client = createSwitchboardClient({ baseUrl, auth: process.env.SWITCHBOARD_TOKEN });

const roomId = () => `sdk-${randomUUID().slice(0, 8)}`;

async function createRoom(id, displayName = 'SDK room') {
  const { data, response } = await roomServiceCreateRoom({
    client,
    query: { roomId: id },
    body: { displayName, labels: { origin: 'typescript' } },
    throwOnError: true,
  });
  return { room: data, status: response.status };
}

async function post(room, text) {
  const { data } = await chatServicePostMessage({
    client,
    path: { room },
    body: { text },
    throwOnError: true,
  });
  return data;
}

test('creates a room and reads it back', async () => {
  const id = roomId();
  const { room, status } = await createRoom(id, 'Hello from TypeScript');
  assert.equal(status, 201);
  assert.equal(room.name, `rooms/${id}`);
  assert.equal(room.displayName, 'Hello from TypeScript');
  if (process.env.SWITCHBOARD_TOKEN) assert.equal(room.creator, 'sdk-user');
  assert.deepEqual(room.labels, { origin: 'typescript' });
  assert.ok(!Number.isNaN(Date.parse(room.createTime)), `createTime ${room.createTime}`);
  assert.equal(typeof room.lastOffset, 'string', 'int64 travels as a decimal string');

  const { data: fetched } = await roomServiceGetRoom({ client, path: { room: id }, throwOnError: true });
  assert.equal(fetched.name, room.name);
  assert.equal(fetched.etag, room.etag);
});

test('posts messages and lists them a page at a time, newest first', async () => {
  const id = roomId();
  await createRoom(id);
  const texts = ['one', 'two', 'three', 'four', 'five'];
  for (const text of texts) {
    const message = await post(id, text);
    assert.equal(message.text, text);
    assert.match(message.name, new RegExp(`^rooms/${id}/messages/`));
  }
  const seen = [];
  let pageToken = '';
  let pages = 0;
  do {
    const { data } = await chatServiceListMessages({
      client,
      path: { room: id },
      query: { pageSize: 2, ...(pageToken ? { pageToken } : {}) },
      throwOnError: true,
    });
    assert.ok(data.messages.length <= 2);
    seen.push(...data.messages.map((m) => m.text));
    pageToken = data.nextPageToken;
    pages += 1;
  } while (pageToken && pages < 10);
  assert.deepEqual(seen, [...texts].reverse());
  assert.equal(pages, 3);
});

test('a call without the token is refused with 401 and a google.rpc.Status', async (t) => {
  if (!process.env.SWITCHBOARD_TOKEN) return t.skip('the gateway runs without auth');
  const anonymous = createSwitchboardClient({ baseUrl });
  const { error, response } = await roomServiceGetRoom({ client: anonymous, path: { room: 'any' } });
  assert.equal(response.status, 401);
  assert.equal(error.code, 16, 'UNAUTHENTICATED');
  assert.match(response.headers.get('WWW-Authenticate') ?? '', /^Bearer/);
});

test('errors arrive as google.rpc.Status', async () => {
  const missing = await roomServiceGetRoom({ client, path: { room: roomId() } });
  assert.equal(missing.response.status, 404);
  assert.equal(missing.error.code, 5, 'NOT_FOUND');
  assert.equal(typeof missing.error.message, 'string');
  assert.ok(Array.isArray(missing.error.details));

  const invalid = await roomServiceCreateRoom({
    client,
    query: { roomId: 'Not A Valid Id!' },
    body: { displayName: 'x' },
  });
  assert.equal(invalid.response.status, 400);
  assert.equal(invalid.error.code, 3, 'INVALID_ARGUMENT');
  assert.match(invalid.error.message, /room/i);
});

test('subscribes over Server-Sent Events and sees a posted message', async () => {
  const id = roomId();
  await createRoom(id);
  const abort = new AbortController();
  const names = [];
  const { stream } = await chatServiceSubscribe({
    client,
    path: { room: id },
    signal: abort.signal,
    sseMaxRetryAttempts: 1,
    onSseEvent: (event) => {
      if (event.data !== undefined) names.push(event.event ?? 'message'); // skip `retry:` blocks
    },
  });
  const received = [];
  try {
    for await (const event of stream) {
      received.push(event);
      if ('subscribed' in event && event.subscribed) {
        await post(id, 'live over SSE');
      }
      if ('messagePosted' in event && event.messagePosted) break;
    }
  } finally {
    abort.abort();
  }
  assert.ok('subscribed' in received[0], 'the first event is subscribed');
  assert.equal(received[0].subscribed.recovered, false);
  const posted = received.find((event) => 'messagePosted' in event && event.messagePosted);
  assert.equal(posted.messagePosted.text, 'live over SSE');
  assert.equal(posted.room, `rooms/${id}`);
  assert.match(posted.id, /.+/, 'a durable event carries its cursor');
  assert.deepEqual([names[0], names.at(-1)], ['subscribed', 'message_posted']);
});
