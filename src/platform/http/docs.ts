/**
 * API documentation: the OpenAPI 3.1 document generated from the route schemas (`docs`, the collector, registered
 * before every route), served at `/openapi.json` with Swagger UI at `/docs` (`docsRoutes`, registered after auth).
 *
 * 3.1 because its Schema Object is JSON Schema, which is what the TypeBox schemas are (`examples`, a type list
 * for a nullable field); a 3.0 document would have to rewrite them. test/openapi-lint.test.ts keeps the served
 * document clean under `@redocly/cli lint` (recommended rules, no errors, no warnings).
 */
import swagger, { type SwaggerOptions } from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import fp from 'fastify-plugin';
import { VERSION } from '../version.ts';
import { ErrorBody } from './error-schemas.ts';

declare module 'fastify' {
  interface FastifySchema {
    /**
     * The request body as the document describes it, when it is wider than the validated `body` because a
     * preValidation hook normalizes it first (`POST /users/batch` takes a bare array too).
     */
    documentedBody?: unknown;
  }
}

type RouteSchema = {
  querystring?: { properties?: Record<string, { default?: unknown }>; required?: string[] };
  body?: unknown;
  documentedBody?: unknown;
  operationId?: string;
  security?: unknown[];
  response?: Record<string, unknown>;
};

/**
 * A query parameter with a default is optional for the client, but the TypeBox schemas list it as required so
 * that handlers see a plain `number` (Ajv fills the default before the check). Say so in the document.
 */
function withOptionalDefaults<S>(schema: S): S {
  const qs = (schema as RouteSchema | undefined)?.querystring;
  if (!qs?.required || !qs.properties) return schema;
  const props = qs.properties;
  const required = qs.required.filter((name) => props[name]?.default === undefined);
  return { ...schema, querystring: { ...qs, required } };
}

/** `get /users/{id}` -> `getUsersById`: a stable operationId for client generators, from method and path. */
export function operationIdOf(method: string, url: string): string {
  const words = url.split('/').filter(Boolean).map((seg) => (seg.startsWith(':') ? `by_${seg.slice(1)}` : seg));
  const camel = (words.length ? words : ['root']).join('_').split(/[_-]+/)
    .map((w) => w.charAt(0).toUpperCase() + w.slice(1)).join('');
  return method.toLowerCase() + camel;
}

/** Every route can refuse a malformed `X-Request-Timeout` (src/platform/http/request-context.ts). */
const BAD_HEADER = { ...ErrorBody, description: 'Bad request (a malformed X-Request-Timeout header)' };

/**
 * What the document adds to every operation's schema: an operationId, `security: []` for a public route (the
 * auth module leaves it out: no credential is asked for), the 400 every route can answer, and the documented
 * body where it differs from the validated one.
 */
function documented<S>(schema: S, method: string, url: string): S {
  const s = { ...withOptionalDefaults(schema as RouteSchema) };
  s.operationId ??= operationIdOf(method, url);
  s.security ??= [];
  if (!Object.keys(s.response ?? {}).includes('400')) s.response = { ...s.response, 400: BAD_HEADER };
  if (s.documentedBody !== undefined) {
    s.body = s.documentedBody;
    delete s.documentedBody;
  }
  return s as S;
}

type OpenApiOptions = NonNullable<Extract<SwaggerOptions, { openapi?: unknown }>['openapi']>;
type SecuritySchemes = NonNullable<NonNullable<OpenApiOptions['components']>['securitySchemes']>;

export interface DocsOptions {
  /** The document's security schemes (the auth module's). */
  securitySchemes: SecuritySchemes;
}

export default fp<DocsOptions>(
  async (app, { securitySchemes }) => {
    await app.register(swagger, {
      openapi: {
        openapi: '3.1.0',
        info: {
          title: 'Spate users API',
          version: VERSION,
          description: 'Users CRUD, keyset pagination, streaming, batch writes, health and metrics.',
          license: { name: 'MIT', identifier: 'MIT' },
        },
        // Relative: the document describes whichever host served it.
        servers: [{ url: '/', description: 'This server' }],
        tags: [
          { name: 'users', description: 'The users resource' },
          { name: 'streaming', description: 'Users read from a database cursor and streamed as they arrive' },
          { name: 'operations', description: 'Health, metrics, benchmarks and shutdown' },
          { name: 'auth', description: 'Accounts, tokens and API keys' },
        ],
        components: { securitySchemes },
      },
      transform: ({ schema, url, route }) => ({ schema: documented(schema, [route.method].flat()[0]!, url), url }),
    });
  },
  { name: 'docs' },
);

/**
 * Swagger UI at `/docs` and the document at `/openapi.json`: registered after the auth plugin, so its policy (public,
 * rate-limited) covers them like any route, while the collector above, registered before every route, sees them all.
 */
export const docsRoutes = fp(
  async (app) => {
    await app.register(swaggerUi, { routePrefix: '/docs' });
    app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  },
  { name: 'docs-routes', dependencies: ['docs'] },
);
