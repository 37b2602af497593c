/**
 * The backend plugin: opens the configured backend once (src/db/backend.ts), decorates the instance with it, and
 * closes it when the app closes. Registered before every plugin that needs a store (they name it in their
 * `dependencies`); it registers no routes. Tests may hand in a backend of their own, which they then close.
 */
import fp from 'fastify-plugin';
import type { Config } from '../platform/config.ts';
import type { QueryObserver } from '../platform/probes.ts';
import { openBackend, type Backend } from './backend.ts';

declare module 'fastify' {
  interface FastifyInstance {
    backend: Backend;
  }
}

export interface BackendPluginOptions {
  config: Config;
  /** Use this backend instead of opening one from config; the caller then owns closing it. */
  backend?: Backend;
  /** Told about every database call (duration, error kind): the metrics plugin's hook. */
  onQuery?: QueryObserver;
}

export default fp<BackendPluginOptions>(
  async (app, { config, backend: given, onQuery }) => {
    const backend = given ?? (await openBackend(config, { log: app.log, onQuery }));
    app.decorate('backend', backend);
    if (!given) app.addHook('onClose', async () => backend.close());
  },
  { name: 'backend' },
);
