// The Switchboard SDK: the generated functions and types, and a configured client factory.
export * from './gen/index.js';
export { client } from './gen/client.gen.js';
export { createClient, createConfig } from './gen/client/index.js';
