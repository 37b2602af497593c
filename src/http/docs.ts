/**
 * API documentation: the OpenAPI 3 document generated from the route schemas, served at `/openapi.json`, and
 * Swagger UI at `/docs`.
 */
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import fp from 'fastify-plugin';
import { SECURITY_SCHEMES } from '../auth/openapi.ts';
import { VERSION } from '../ops/health.ts';

type RouteSchema = { querystring?: { properties?: Record<string, { default?: unknown }>; required?: string[] } };

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

export default fp(
  async (app) => {
    await app.register(swagger, {
      openapi: {
        openapi: '3.0.3',
        info: {
          title: 'Spate users API',
          version: VERSION,
          description: 'Users CRUD, keyset pagination, streaming, batch writes, health and metrics.',
        },
        tags: [{ name: 'users' }, { name: 'streaming' }, { name: 'operations' }, { name: 'auth' }],
        components: { securitySchemes: SECURITY_SCHEMES },
      },
      transform: ({ schema, url }) => ({ schema: withOptionalDefaults(schema), url }),
    });
    await app.register(swaggerUi, { routePrefix: '/docs' });
    app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  },
  { name: 'docs' },
);
