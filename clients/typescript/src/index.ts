// The Switchboard SDK: the generated functions and types, clients that speak SSE, and the
// WebSocket calls (./websocket.ts) for the client- and bidi-streaming operations.
import { client } from './gen/client.gen.js';
import { type Client, type Config, createClient, createConfig } from './gen/client/index.js';
import { SSE_ROUTES } from './sse-routes.gen.js';

export * from './gen/index.js';
export { client, createClient, createConfig };
export { SSE_ROUTES };
export * from './websocket.js';

/**
 * Ask for `text/event-stream` on the server-streaming operations: the gateway answers NDJSON to
 * any other Accept header, and the generated SSE functions send none of their own.
 */
export function acceptEventStreams(target: Client): Client {
  target.interceptors.request.use((request, options) => {
    if (SSE_ROUTES.has(`${request.method} ${options.url}`) && !request.headers.has('Accept')) {
      request.headers.set('Accept', 'text/event-stream');
    }
    return request;
  });
  return target;
}

/** A client for the gateway at `baseUrl`; `auth` is the bearer token (or a function giving it). */
export function createSwitchboardClient(config: Config = {}): Client {
  return acceptEventStreams(createClient(createConfig(config)));
}

acceptEventStreams(client);
