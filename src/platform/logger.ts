/**
 * Logger options: pino, JSON when stdout is not a terminal, readable (pino-pretty) when it is.
 *
 * Requests are logged by path and route only: query strings and bodies may hold personal data or credentials,
 * so they never reach a log line, and neither do credential headers or secret fields (see `censorSecrets`).
 */
import type { FastifyServerOptions } from 'fastify';
import type { Config } from './config.ts';
import { tracer } from './tracing/context.ts';

const CENSORED = '[redacted]';

/** Keys (lower case) whose values are credentials wherever a careless log call puts them: headers, bodies, config. */
const SECRET_KEYS = new Set([
  'authorization', 'cookie', 'set-cookie', 'x-api-key',
  'password', 'token', 'access_token', 'refresh_token', 'key', 'secret', 'jwtsecret', 'metricstoken',
]);
/** `req.headers.authorization` is three levels down; nothing logged nests secrets deeper. */
const MAX_DEPTH = 3;

const isPlainObject = (v: unknown): v is Record<string, unknown> => {
  if (v === null || typeof v !== 'object') return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
};

/**
 * `obj` with the value of every secret key, down to three levels of plain objects, replaced by `[redacted]`.
 * Copies only the objects on the way to a secret, so the caller's objects (a request body, say) are never
 * changed and a line without secrets costs one look-up per key.
 *
 * This replaces pino's `redact` paths: wildcard paths (`*.password`) make pino run its redactor over every
 * value of every line, about a tenth of the main thread of a request under load (docs/benchmarks.md). Errors
 * and other class instances are left to their serializers.
 */
export function censorSecrets(obj: Record<string, unknown>, depth = 1): Record<string, unknown> {
  let out = obj;
  for (const k in obj) {
    const v = obj[k];
    let w = v;
    if (SECRET_KEYS.has(k.toLowerCase())) w = CENSORED;
    else if (depth < MAX_DEPTH && isPlainObject(v)) w = censorSecrets(v, depth + 1);
    if (w !== v) {
      if (out === obj) out = { ...obj };
      out[k] = w;
    }
  }
  return out;
}

export function loggerOptions(config: Pick<Config, 'logLevel'>): FastifyServerOptions['logger'] {
  const pretty = process.stdout.isTTY === true;
  // With tracing on (started before the app, src/process/server.ts), each line names its trace and span;
  // off, pino has no mixin to call.
  const traced = tracer();
  return {
    level: config.logLevel,
    ...(traced ? { mixin: () => traced.logFields() } : {}),
    formatters: { log: censorSecrets },
    serializers: {
      // Also for a `req` that is not a request: a serializer that throws would fail the request that logged.
      req: (req: { method?: string; url?: unknown }) => ({
        method: req.method,
        path: typeof req.url === 'string' ? req.url.split('?', 1)[0] : undefined,
      }),
    },
    ...(pretty ? { transport: { target: 'pino-pretty', options: { translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' } } } : {}),
  };
}
