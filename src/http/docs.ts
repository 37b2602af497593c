/**
 * API documentation: the OpenAPI 3 document generated from the route schemas, served at `/openapi.json`, and
 * Swagger UI at `/docs`.
 */
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import fp from 'fastify-plugin';
import { SECURITY_SCHEMES } from '../auth/openapi.ts';
import { VERSION } from '../ops/health.ts';

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
    });
    await app.register(swaggerUi, { routePrefix: '/docs' });
    app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  },
  { name: 'docs' },
);
