/**
 * The OpenAPI security schemes, so /docs can authorize: the OAuth2 password flow against /auth/token (Swagger
 * UI's "Authorize" logs in with an email and password), a bearer token (access JWT or `spk_` API key), the
 * `X-API-Key` header, and the metrics token. Each protected route lists the schemes that open it (set by the
 * auth plugin from the policy table).
 */
import type { Access } from './policy.ts';

export const SECURITY_SCHEMES = {
  OAuth2Password: {
    type: 'oauth2',
    description: 'Log in with an account email (as username) and password.',
    flows: {
      password: {
        tokenUrl: '/auth/token',
        refreshUrl: '/auth/refresh',
        scopes: {
          'users:read': 'Read users',
          'users:write': 'Create, update and delete users',
          admin: 'Shut down, manage accounts',
        },
      },
    },
  },
  BearerAuth: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT', description: 'An access token, or an API key (spk_...).' },
  ApiKeyHeader: { type: 'apiKey', in: 'header', name: 'X-API-Key' },
  MetricsToken: { type: 'http', scheme: 'bearer', description: 'METRICS_TOKEN, when the operator set one.' },
} as const;

/** The OpenAPI `security` requirement of a route with `access`, or undefined for a public one. */
export function securityFor(access: Access): Record<string, string[]>[] | undefined {
  switch (access) {
    case 'public':
      return undefined;
    case 'metrics':
      return [{ MetricsToken: [] }, { BearerAuth: [] }, { ApiKeyHeader: [] }];
    case 'session':
      return [{ OAuth2Password: [] }, { BearerAuth: [] }];
    case 'account':
      return [{ OAuth2Password: [] }, { BearerAuth: [] }, { ApiKeyHeader: [] }];
    default:
      return [{ OAuth2Password: [access] }, { BearerAuth: [] }, { ApiKeyHeader: [] }];
  }
}
