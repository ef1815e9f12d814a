// Generates src/gen from the committed OpenAPI document (`npm run generate`).
//
// The document describes every transport the gateway offers; the SDK uses one per operation:
// - server streaming: Server-Sent Events (the NDJSON variant of the same response is dropped,
//   since the client would pick the first media type listed, which is NDJSON);
// - bidi streaming: WebSocket only (`x-websocket`), so no fetch function is generated.
import { defineConfig } from '@hey-api/openapi-ts';

type Operation = {
  responses?: Record<string, { content?: Record<string, unknown> }>;
  'x-grpc'?: { cardinality?: string };
};

const METHODS = ['get', 'put', 'post', 'delete', 'patch', 'options', 'head', 'trace'];

function forSdk(spec: { paths?: Record<string, Record<string, unknown>> }): void {
  for (const item of Object.values(spec.paths ?? {})) {
    for (const method of METHODS) {
      const operation = item[method] as Operation | undefined;
      if (!operation) continue;
      if (operation['x-grpc']?.cardinality === 'bidi_streaming') {
        delete item[method];
        continue;
      }
      for (const response of Object.values(operation.responses ?? {})) {
        const content = response.content;
        if (content && 'text/event-stream' in content) delete content['application/x-ndjson'];
      }
    }
  }
}

export default defineConfig({
  input: '../../openapi/switchboard.openapi.json',
  output: { path: 'src/gen', postProcess: [] },
  parser: {
    patch: { input: (spec) => forSdk(spec as Parameters<typeof forSdk>[0]) },
  },
  plugins: [
    '@hey-api/typescript',
    { name: '@hey-api/sdk' },
    { name: '@hey-api/client-fetch' },
  ],
});
