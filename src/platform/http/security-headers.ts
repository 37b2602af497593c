/**
 * Security headers from helmet, computed once at start and set on every reply by one synchronous hook
 * (src/platform/http/security.ts).
 *
 * `@fastify/helmet` runs `helmet(options)` for every request, which validates and serializes the whole
 * Content-Security-Policy again each time: about a tenth of the main thread of `GET /users/{id}` under load
 * (docs/benchmarks.md). The headers depend on nothing in the request, so helmet itself computes them here, once,
 * and the hook copies the result. Same library, same options, same bytes on the wire.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import helmet, { type HelmetOptions } from 'helmet';

export const HELMET_OPTIONS: Readonly<HelmetOptions> = {
  contentSecurityPolicy: {
    useDefaults: false,
    // Strict, but enough for Swagger UI at /docs (its scripts and styles are same-origin files; it styles
    // elements inline and shows data: images). No upgrade-insecure-requests: it would break /docs over plain
    // HTTP on a non-localhost address.
    directives: {
      defaultSrc: ["'self'"],
      baseUri: ["'self'"],
      connectSrc: ["'self'"],
      fontSrc: ["'self'", 'data:'],
      formAction: ["'self'"],
      frameAncestors: ["'none'"],
      imgSrc: ["'self'", 'data:'],
      objectSrc: ["'none'"],
      scriptSrc: ["'self'"],
      scriptSrcAttr: ["'none'"],
      styleSrc: ["'self'", "'unsafe-inline'"],
    },
  },
  hsts: { maxAge: 15_552_000, includeSubDomains: false },
};

/** The headers helmet's middleware sets with `options`, by lower-case name, captured from one run of it. */
export function helmetHeaders(options: Readonly<HelmetOptions>): Record<string, string> {
  const headers: Record<string, string> = {};
  const res = {
    setHeader(name: string, value: unknown) { headers[name.toLowerCase()] = String(value); },
    removeHeader(name: string) { delete headers[name.toLowerCase()]; },
  };
  let called = false;
  helmet(options)({} as IncomingMessage, res as unknown as ServerResponse, () => { called = true; });
  // A helmet that answered asynchronously or read the request would make a one-off capture wrong.
  if (!called) throw new Error('helmet did not finish synchronously; its headers cannot be computed once');
  return headers;
}

/** The headers every reply carries, computed once (src/platform/http/security.ts sets them from its onRequest hook). */
export const securityHeaders = (options: Readonly<HelmetOptions> = HELMET_OPTIONS): Readonly<Record<string, string>> =>
  Object.freeze(helmetHeaders(options));
