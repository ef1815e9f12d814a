// WebSocket calls: the client- and bidi-streaming operations (hand-written; the generator makes
// no function for them). The frame protocol is gateway/docs/streaming.md ("WebSocket") and the
// `x-websocket` extension of the OpenAPI document:
//
//   subprotocol `switchboard.grpc.json.v1`, text frames, one JSON object with exactly one key:
//   client → gateway  {"message": {…request…}}   {"halfClose": true}
//   gateway → client  {"result": {…response…}}   last {"status": {…google.rpc.Status…}}
//   then the gateway closes with the code `closeCodeFor(status.code)` gives.
//
// The token travels as the subprotocols `bearer`, `<token>` (gateway/docs/auth.md): never in the
// URL (which ends up in logs), and it works in browsers, which cannot set `Authorization` on a
// WebSocket. The gateway never echoes it.
import { client as defaultClient } from './gen/client.gen.js';
import type { Client } from './gen/client/index.js';
import type { Auth, AuthToken } from './gen/core/auth.gen.js';
import type {
  ConverseRequestWritable,
  ConverseResponse,
  ImportMessagesRequestWritable,
  ImportMessagesResponse,
  Status,
} from './gen/types.gen.js';

/** The JSON frame subprotocol (the only one this client speaks). */
export const JSON_FRAMES = 'switchboard.grpc.json.v1';

/** The streaming operations this module has functions for, as the OpenAPI document names them. */
export const WEBSOCKET_OPERATIONS = {
  chatServiceConverse: {
    method: '/switchboard.v1.ChatService/Converse',
    path: '/v1/rooms/{room}:converse',
    cardinality: 'bidi_streaming',
  },
  chatServiceImportMessages: {
    method: '/switchboard.v1.ChatService/ImportMessages',
    path: '/v1/rooms/{room}/messages:import',
    cardinality: 'client_streaming',
  },
} as const;

/** google.rpc.Code values. */
export const GrpcCode = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;

/** The close codes the gateway uses (4000 + code for every other status). */
export const CloseCode = {
  /** The call ended with OK. */
  OK: 1000,
  /** No close frame: the connection dropped, or the handshake was refused (set by the client). */
  ABNORMAL: 1006,
  /** UNAUTHENTICATED or PERMISSION_DENIED; with "token expired": reconnect with a fresh token. */
  POLICY_VIOLATION: 1008,
  /** A message over the gateway's size limit. */
  MESSAGE_TOO_BIG: 1009,
  /** INTERNAL, UNKNOWN or DATA_LOSS. */
  INTERNAL_ERROR: 1011,
  /** The gateway is shutting down (its status is UNAVAILABLE). */
  SERVICE_RESTART: 1012,
} as const;

/** The close code the gateway ends a call with `code` with (gateway/frames.py `close_code`). */
export function closeCodeFor(code: number): number {
  switch (code) {
    case GrpcCode.OK:
      return CloseCode.OK;
    case GrpcCode.UNAUTHENTICATED:
    case GrpcCode.PERMISSION_DENIED:
      return CloseCode.POLICY_VIOLATION;
    case GrpcCode.UNKNOWN:
    case GrpcCode.INTERNAL:
    case GrpcCode.DATA_LOSS:
      return CloseCode.INTERNAL_ERROR;
    default:
      return 4000 + code;
  }
}

/** A google.rpc.Status with every field present. */
export type RpcStatus = Required<Status>;

/** What a WebSocket implementation must offer: the browser's, or e.g. the `ws` package's. */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: string, listener: (event: unknown) => void): void;
}

/** `new WebSocket(url, protocols)`: `globalThis.WebSocket`, or `WebSocket` from `ws` on Node 20. */
export type WebSocketConstructor = new (
  url: string,
  protocols?: string | string[],
) => WebSocketLike;

/** The global WebSocket (browsers, Node >= 22), which this type-checks against the interface. */
function globalWebSocket(): WebSocketConstructor | undefined {
  return typeof WebSocket === 'undefined' ? undefined : WebSocket;
}

type QueryValue = string | number | boolean;

/** Options of every WebSocket call. */
export interface WebSocketCallOptions<Res> {
  /** Where `baseUrl` and `auth` come from when not given here (default: the SDK's `client`). */
  client?: Client;
  /** The gateway's base URL (`http(s)://` or `ws(s)://`); default: the client's. */
  baseUrl?: string;
  /** The bearer token, or a function giving it; default: the client's `auth`. */
  auth?: ((auth: Auth) => Promise<AuthToken> | AuthToken) | AuthToken;
  /** The WebSocket implementation; default `globalThis.WebSocket` (Node 20 has none: pass `ws`). */
  WebSocket?: WebSocketConstructor;
  /** Query parameters: request fields applied to every request message. */
  query?: Record<string, QueryValue | readonly QueryValue[] | undefined>;
  /** Aborting it closes the call (as `close()`). */
  signal?: AbortSignal;
  /** The socket is open (messages sent before it were queued and go out now). */
  onOpen?: () => void;
  /**
   * Each response as it arrives. With this callback the call does not buffer responses, and
   * `receive()`, `result()` and iteration are not available.
   */
  onMessage?: (message: Res) => void;
  /** The call is over (once, whatever ended it). */
  onEnd?: (end: WebSocketCallEnd) => void;
}

/** How a call ended. */
export interface WebSocketCallEnd {
  /**
   * The google.rpc.Status: the gateway's status frame (or the body of its refusal of the
   * handshake, where the WebSocket implementation shows it); otherwise one made by the client:
   * CANCELLED when `close()` ended the call, UNAVAILABLE when the connection failed or dropped.
   */
  status: RpcStatus;
  /** The WebSocket close code (1006 when no close frame arrived). */
  closeCode: number;
  closeReason: string;
  /** Set unless the call ended with OK or by the client's own `close()`. */
  error?: WebSocketCallError;
}

/**
 * A call that ended with a status other than OK, or whose connection failed. `code` is the gRPC
 * code (`GrpcCode`) whatever the way the gateway said it: status frame + close code, or a
 * refused handshake.
 */
export class WebSocketCallError extends Error {
  override readonly name = 'WebSocketCallError';
  /** The google.rpc.Status (see `WebSocketCallEnd.status`). */
  readonly status: RpcStatus;
  /** The WebSocket close code: `closeCodeFor(status.code)` after a status frame, else 1006. */
  readonly closeCode: number;
  readonly closeReason: string;
  /** The HTTP status of a refused handshake (Node's `ws` shows it; a browser hides it). */
  readonly httpStatus: number | undefined;
  /** Whether `status` came from the gateway (a status frame, or a handshake refusal's body). */
  readonly fromGateway: boolean;

  constructor(
    status: RpcStatus,
    closeCode: number,
    closeReason: string,
    options: { httpStatus?: number; fromGateway: boolean; cause?: unknown },
  ) {
    super(
      `${codeName(status.code)}: ${status.message || '(no message)'} (close ${closeCode}` +
        `${options.httpStatus === undefined ? '' : `, HTTP ${options.httpStatus}`})`,
      options.cause === undefined ? undefined : { cause: options.cause },
    );
    this.status = status;
    this.closeCode = closeCode;
    this.closeReason = closeReason;
    this.httpStatus = options.httpStatus;
    this.fromGateway = options.fromGateway;
  }

  /** The gRPC status code. */
  get code(): number {
    return this.status.code;
  }

  /** The token that admitted the socket expired: reconnect with a fresh one (auth.md). */
  get tokenExpired(): boolean {
    return this.status.code === GrpcCode.UNAUTHENTICATED && this.status.message === 'token expired';
  }
}

function codeName(code: number): string {
  const found = Object.entries(GrpcCode).find(([, value]) => value === code);
  return found ? found[0] : `code ${code}`;
}

function rpcStatus(code: number, message: string): RpcStatus {
  return { code, message, details: [] };
}

function asStatus(value: unknown): RpcStatus | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const { code = 0, message = '', details = [] } = value as Status;
  if (typeof code !== 'number' || typeof message !== 'string' || !Array.isArray(details)) {
    return undefined;
  }
  return { code, message, details };
}

/** The gRPC code for an HTTP status, as the gateway maps them (for a body that is no Status). */
function codeForHttp(status: number): number {
  const codes: Record<number, number> = {
    400: GrpcCode.INVALID_ARGUMENT,
    401: GrpcCode.UNAUTHENTICATED,
    403: GrpcCode.PERMISSION_DENIED,
    404: GrpcCode.NOT_FOUND,
    409: GrpcCode.ABORTED,
    429: GrpcCode.RESOURCE_EXHAUSTED,
    501: GrpcCode.UNIMPLEMENTED,
    503: GrpcCode.UNAVAILABLE,
    504: GrpcCode.DEADLINE_EXCEEDED,
  };
  return codes[status] ?? GrpcCode.UNKNOWN;
}

// RFC 7230 token characters: what a subprotocol (and so the token riding as one) may contain.
const SUBPROTOCOL_TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const HANDSHAKE_BODY_LIMIT = 64 * 1024;
const OPEN = 1;

/** The answer to a refused handshake, as `ws` shows it (`unexpected-response`). Duck-typed. */
interface HandshakeResponse extends AsyncIterable<unknown> {
  statusCode?: number;
}
type UnexpectedResponse = (request: unknown, response: HandshakeResponse) => void;
interface ShowsRefusals {
  on(event: 'unexpected-response', listener: UnexpectedResponse): unknown;
}

function showsRefusals(socket: WebSocketLike): socket is WebSocketLike & ShowsRefusals {
  return typeof (socket as Partial<ShowsRefusals>).on === 'function';
}

async function readBody(response: HandshakeResponse): Promise<string> {
  const decoder = new TextDecoder();
  let text = '';
  for await (const chunk of response) {
    text +=
      typeof chunk === 'string' ? chunk : decoder.decode(chunk as Uint8Array, { stream: true });
    if (text.length > HANDSHAKE_BODY_LIMIT) break;
  }
  return text + decoder.decode();
}

/** The `ws(s)://` URL of `path` under `baseUrl`, its `{name}` variables filled from `params`. */
export function webSocketUrl(
  baseUrl: string,
  path: string,
  params: Record<string, string> = {},
  query: WebSocketCallOptions<unknown>['query'] = {},
): string {
  const here = (globalThis as { location?: { href?: string } }).location?.href;
  const url = new URL(baseUrl, here);
  if (url.protocol === 'http:') url.protocol = 'ws:';
  else if (url.protocol === 'https:') url.protocol = 'wss:';
  else if (url.protocol !== 'ws:' && url.protocol !== 'wss:') {
    throw new TypeError(`baseUrl must be http(s):// or ws(s)://, got ${url.protocol}`);
  }
  const filled = path.replace(/\{([^}]+)\}/g, (_, name: string) => {
    const value = params[name];
    if (!value) throw new TypeError(`path parameter ${name} is required`);
    return encodeURIComponent(value);
  });
  url.pathname = url.pathname.replace(/\/+$/, '') + filled;
  for (const [name, value] of Object.entries(query)) {
    if (value === undefined) continue;
    for (const item of Array.isArray(value) ? value : [value]) {
      url.searchParams.append(name, String(item));
    }
  }
  url.hash = '';
  return url.toString();
}

/**
 * One streaming call over one WebSocket: `send` request messages, `halfClose()` when done
 * sending, read the responses with `for await` (or `receive()`, `result()`, `onMessage`), and
 * `close()` to cancel. Iteration ends when the gateway ends the call with OK, and throws a
 * `WebSocketCallError` (after every response that came before) when it ends otherwise.
 */
export class WebSocketCall<Req, Res> implements AsyncIterable<Res> {
  /** The socket's URL (it never holds the token). */
  readonly url: string;
  /** Resolves when the socket is open; rejects with the call's error if it never opens. */
  readonly opened: Promise<void>;
  /** Resolves (never rejects) when the call is over. */
  readonly ended: Promise<WebSocketCallEnd>;

  readonly #options: WebSocketCallOptions<Res>;
  #socket: WebSocketLike | undefined;
  #outbox: string[] = []; // frames sent before the socket opened
  #inbox: Res[] = [];
  #waiters: Array<() => void> = [];
  #wasOpen = false;
  #halfClosed = false;
  #closedByClient = false;
  #status: RpcStatus | undefined; // the gateway's status frame
  #refusal: Promise<{ httpStatus: number; status: RpcStatus }> | undefined;
  #failure: RpcStatus | undefined; // a frame this client cannot read
  #end: WebSocketCallEnd | undefined;
  #resolveOpened!: () => void;
  #rejectOpened!: (error: unknown) => void;
  #resolveEnded!: (end: WebSocketCallEnd) => void;

  constructor(path: string, params: Record<string, string>, options: WebSocketCallOptions<Res>) {
    this.#options = options;
    const config = (options.client ?? defaultClient).getConfig();
    this.url = webSocketUrl(options.baseUrl ?? config.baseUrl ?? '', path, params, options.query);
    const implementation = options.WebSocket ?? globalWebSocket();
    if (implementation === undefined) {
      throw new TypeError(
        'no WebSocket implementation: pass the WebSocket option (Node 20: WebSocket from "ws")',
      );
    }
    this.opened = new Promise<void>((resolve, reject) => {
      this.#resolveOpened = resolve;
      this.#rejectOpened = reject;
    });
    this.opened.catch(() => undefined); // not awaiting it is no unhandled rejection
    this.ended = new Promise((resolve) => (this.#resolveEnded = resolve));
    if (options.signal?.aborted) {
      this.close();
      return;
    }
    options.signal?.addEventListener('abort', () => this.close(), { once: true });
    void this.#connect(implementation, options.auth ?? config.auth);
  }

  async #connect(
    implementation: WebSocketConstructor,
    auth: WebSocketCallOptions<Res>['auth'],
  ): Promise<void> {
    let token: AuthToken;
    try {
      token = typeof auth === 'function' ? await auth({ scheme: 'bearer', type: 'http' }) : auth;
    } catch (error) {
      this.#fail(GrpcCode.UNAUTHENTICATED, 'the auth callback failed', error);
      return;
    }
    if (this.#end) return; // closed while the token was on its way
    if (token && !SUBPROTOCOL_TOKEN.test(token)) {
      this.#fail(GrpcCode.INVALID_ARGUMENT, 'the token cannot travel as a WebSocket subprotocol');
      return;
    }
    let socket: WebSocketLike;
    try {
      socket = new implementation(this.url, token ? [JSON_FRAMES, 'bearer', token] : [JSON_FRAMES]);
    } catch {
      // The implementation's message may quote the subprotocols, the token among them.
      this.#fail(GrpcCode.INVALID_ARGUMENT, 'the WebSocket could not be created');
      return;
    }
    this.#socket = socket;
    if (showsRefusals(socket)) {
      socket.on('unexpected-response', (_, response) => {
        this.#refusal = this.#readRefusal(socket, response);
      });
    }
    socket.addEventListener('open', () => this.#opened(socket));
    socket.addEventListener('message', (event) => this.#received((event as MessageEvent).data));
    socket.addEventListener('error', () => undefined); // the close event that follows tells
    socket.addEventListener('close', (event) => {
      const { code, reason } = event as CloseEvent;
      void this.#closed(code ?? CloseCode.ABNORMAL, reason ?? '');
    });
  }

  /** `ws` shows the refusal's HTTP status and body (a Status); a browser shows neither. */
  async #readRefusal(socket: WebSocketLike, response: HandshakeResponse) {
    const httpStatus = response.statusCode ?? 0;
    let status: RpcStatus | undefined;
    try {
      status = asStatus(JSON.parse(await readBody(response)));
    } catch {
      status = undefined;
    } finally {
      socket.close(); // ws: aborts the handshake; the close event (1006) follows
    }
    const refused = `the gateway refused the WebSocket (HTTP ${httpStatus})`;
    return { httpStatus, status: status ?? rpcStatus(codeForHttp(httpStatus), refused) };
  }

  #opened(socket: WebSocketLike): void {
    this.#wasOpen = true;
    if (this.#closedByClient) return;
    for (const frame of this.#outbox.splice(0)) socket.send(frame);
    this.#resolveOpened();
    this.#options.onOpen?.();
  }

  #received(data: unknown): void {
    if (this.#end || this.#failure || this.#closedByClient) return;
    let frame: unknown;
    try {
      if (typeof data !== 'string') throw new TypeError('a binary frame');
      frame = JSON.parse(data);
    } catch (error) {
      this.#unreadable(`the gateway sent a frame that is no JSON text: ${String(error)}`);
      return;
    }
    const key = typeof frame === 'object' && frame !== null ? Object.keys(frame) : [];
    const value = key.length === 1 ? (frame as Record<string, unknown>)[key[0]!] : undefined;
    if (key[0] === 'status' && asStatus(value) && this.#status === undefined) {
      this.#status = asStatus(value);
    } else if (key[0] === 'result' && this.#status === undefined) {
      if (this.#options.onMessage) this.#options.onMessage(value as Res);
      else this.#inbox.push(value as Res);
      this.#wake();
    } else {
      this.#unreadable(`unexpected frame from the gateway: ${String(data).slice(0, 200)}`);
    }
  }

  #unreadable(message: string): void {
    this.#failure = rpcStatus(GrpcCode.INTERNAL, message);
    // 4000 + INTERNAL, as the gateway would say it (browsers allow only 1000 and 3000-4999)
    this.#socket?.close(4000 + GrpcCode.INTERNAL, 'unreadable frame'); // its close event ends
  }

  async #closed(closeCode: number, closeReason: string): Promise<void> {
    const refusal = this.#status === undefined ? await this.#refusal : undefined;
    const ending = (status: RpcStatus, failed: boolean, fromGateway: boolean, http?: number) => {
      const error = failed
        ? new WebSocketCallError(status, closeCode, closeReason, { fromGateway, httpStatus: http })
        : undefined;
      this.#finish({ status, closeCode, closeReason, ...(error ? { error } : {}) });
    };
    if (this.#status) {
      ending(this.#status, this.#status.code !== GrpcCode.OK, true);
    } else if (this.#closedByClient) {
      ending(cancelled(), false, false);
    } else if (refusal) {
      ending(refusal.status, true, true, refusal.httpStatus);
    } else if (this.#failure) {
      ending(this.#failure, true, false);
    } else {
      const what = this.#wasOpen ? 'closed' : 'failed to open';
      const why = closeReason ? `close ${closeCode}: ${closeReason}` : `close ${closeCode}`;
      ending(rpcStatus(GrpcCode.UNAVAILABLE, `the WebSocket ${what} (${why}) with no status`),
        true, false);
    }
  }

  /** Ends a call that has no socket to close (it was never created). */
  #fail(code: number, message: string, cause?: unknown): void {
    const status = rpcStatus(code, message);
    const error = new WebSocketCallError(status, CloseCode.ABNORMAL, '', {
      fromGateway: false,
      cause,
    });
    this.#finish({ status, closeCode: CloseCode.ABNORMAL, closeReason: '', error });
  }

  #finish(end: WebSocketCallEnd): void {
    if (this.#end) return;
    this.#end = end;
    this.#outbox = [];
    this.#rejectOpened(end.error ?? asError(end)); // no effect once opened
    this.#resolveEnded(end);
    this.#wake();
    this.#options.onEnd?.(end);
  }

  #wake(): void {
    for (const wake of this.#waiters.splice(0)) wake();
  }

  #write(frame: string): void {
    const socket = this.#socket;
    if (socket !== undefined && socket.readyState === OPEN) socket.send(frame);
    else this.#outbox.push(frame);
  }

  /**
   * Sends one request message (queued until the socket is open). False when the call is over
   * (nothing is sent). Throws after `halfClose()` or `close()`: nothing may follow them.
   */
  send(message: Req): boolean {
    if (this.#closedByClient) throw new Error('send() after close()');
    if (this.#halfClosed) throw new Error('send() after halfClose()');
    if (this.#end || this.#status || this.#failure) return false;
    this.#write(JSON.stringify({ message }));
    return true;
  }

  /**
   * No more messages will be sent (gRPC `done_writing`): a client-streaming call then answers
   * its one response; a bidi call goes on until the server ends it. Idempotent.
   */
  halfClose(): void {
    if (this.#halfClosed || this.#closedByClient || this.#end) return;
    this.#halfClosed = true;
    this.#write(JSON.stringify({ halfClose: true }));
  }

  /**
   * Cancels the call: closes the socket with 1000, and the gateway cancels the upstream call.
   * Unread responses are dropped and iteration ends without an error; `ended` gives CANCELLED
   * (or the gateway's status, if one had arrived). Idempotent.
   */
  close(): void {
    if (this.#closedByClient || this.#end) return;
    this.#closedByClient = true;
    this.#outbox = [];
    this.#inbox = [];
    if (this.#socket === undefined) {
      this.#finish({ status: cancelled(), closeCode: CloseCode.OK, closeReason: '' });
    } else {
      this.#socket.close(CloseCode.OK);
    }
    this.#wake();
  }

  /**
   * The next response; undefined once the call ended with OK or was closed by the client.
   * Throws the `WebSocketCallError` once the responses that came before the end are read.
   */
  async receive(): Promise<Res | undefined> {
    if (this.#options.onMessage) throw new Error('this call delivers its responses to onMessage');
    for (;;) {
      const next = this.#inbox.shift();
      if (next !== undefined) return next;
      if (this.#closedByClient) return undefined;
      if (this.#end?.error) throw this.#end.error;
      if (this.#end) return undefined;
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
  }

  /**
   * The one response of a client-streaming call (`send`, `halfClose()`, then await this).
   * Throws the call's error, or CANCELLED when the client closed the call first.
   */
  async result(): Promise<Res> {
    let last: Res | undefined;
    for (let next = await this.receive(); next !== undefined; next = await this.receive()) {
      last = next;
    }
    const end = await this.ended;
    if (end.status.code !== GrpcCode.OK) throw end.error ?? asError(end);
    if (last === undefined) {
      throw asError({ ...end, status: rpcStatus(GrpcCode.INTERNAL, 'the call had no response') });
    }
    return last;
  }

  /** The responses until the end. Leaving the loop early (break, return, throw) closes the call. */
  async *[Symbol.asyncIterator](): AsyncIterator<Res> {
    let finished = false;
    try {
      for (let next = await this.receive(); next !== undefined; next = await this.receive()) {
        yield next;
      }
      finished = true;
    } finally {
      if (!finished) this.close();
    }
  }
}

function cancelled(): RpcStatus {
  return rpcStatus(GrpcCode.CANCELLED, 'the client closed the call');
}

function asError(end: WebSocketCallEnd): WebSocketCallError {
  return new WebSocketCallError(end.status, end.closeCode, end.closeReason, { fromGateway: false });
}

/** Converse's request (`room` comes from the path and may be left out). */
export type ConverseSocketRequest = ConverseRequestWritable;
/** ImportMessages' request (`parent` comes from the path and may be left out). */
export type ImportMessagesSocketRequest = Omit<ImportMessagesRequestWritable, 'parent'> & {
  parent?: string;
};

/**
 * ChatService.Converse (bidi streaming) in `rooms/{room}`. Send `{}` (or `{ cursor }`) first: the
 * first response is the `subscribed` event. Then `{ typing: { active } }` and
 * `{ post: { message: { text }, requestId } }`; the responses are the room's events and one
 * `ack` per post. A half-close does not end a conversation: its events go on until `close()`.
 */
export function chatServiceConverseWebSocket(
  options: WebSocketCallOptions<ConverseResponse> & { path: { room: string } },
): WebSocketCall<ConverseSocketRequest, ConverseResponse> {
  const { path } = WEBSOCKET_OPERATIONS.chatServiceConverse;
  return new WebSocketCall(path, options.path, options);
}

/**
 * ChatService.ImportMessages (client streaming) into `rooms/{room}`: `send` each message,
 * `halfClose()`, then `await result()` for the counts.
 */
export function chatServiceImportMessagesWebSocket(
  options: WebSocketCallOptions<ImportMessagesResponse> & { path: { room: string } },
): WebSocketCall<ImportMessagesSocketRequest, ImportMessagesResponse> {
  const { path } = WEBSOCKET_OPERATIONS.chatServiceImportMessages;
  return new WebSocketCall(path, options.path, options);
}
