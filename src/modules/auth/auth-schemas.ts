/**
 * Request and response schemas of the /auth routes: one source for validation, serialization and the OpenAPI
 * document. A separate type per use: what a client may send never includes a role, an id or a timestamp except
 * where an admin sets a role on purpose; unknown fields are dropped by validation.
 */
import { Type } from 'typebox';
import { ErrorBody } from '../../platform/http/error-schemas.ts';
import { ROLES, SCOPES, type Role, type Scope } from './scopes.ts';

const Email = Type.String({ format: 'email', maxLength: 254, examples: ['ada@example.com'] });
const Password = Type.String({ minLength: 8, maxLength: 1024, description: '8 to 1024 characters' });
const Timestamp = Type.Unsafe<Date | string>({ type: 'string', format: 'date-time', examples: ['2024-01-10T12:34:56.789Z'] });
const NullableTimestamp = Type.Unsafe<Date | string | null>({ type: 'string', format: 'date-time', nullable: true });
const RoleSchema = Type.Unsafe<Role>({ type: 'string', enum: [...ROLES] });
const ScopeSchema = Type.Unsafe<Scope>({ type: 'string', enum: [...SCOPES] });

/** OAuth2 password grant (form, as OAuth2 clients and Swagger UI send it) or JSON with `email` or `username`. */
export const TokenRequest = Type.Object(
  {
    grant_type: Type.Optional(Type.Unsafe<'password'>({ type: 'string', enum: ['password'] })),
    username: Type.Optional(Type.String({ maxLength: 254, description: 'The account email (OAuth2 field name)' })),
    email: Type.Optional(Type.String({ maxLength: 254 })),
    password: Type.String({ maxLength: 1024 }),
    scope: Type.Optional(Type.String({ maxLength: 200, description: 'Ignored: scopes come from the account role' })),
  },
  { title: 'TokenRequest' },
);

export const RefreshRequest = Type.Object(
  {
    grant_type: Type.Optional(Type.Unsafe<'refresh_token'>({ type: 'string', enum: ['refresh_token'] })),
    refresh_token: Type.String({ maxLength: 200 }),
  },
  { title: 'RefreshRequest' },
);

export const LogoutRequest = Type.Object(
  { refresh_token: Type.Optional(Type.String({ maxLength: 200, description: 'Default: the session of the access token sent' })) },
  { title: 'LogoutRequest' },
);

export const TokenResponse = Type.Object(
  {
    access_token: Type.String(),
    token_type: Type.Literal('bearer'),
    expires_in: Type.Integer({ description: 'Seconds until the access token expires' }),
    refresh_token: Type.String({ description: 'Opaque; single use: each refresh returns the next one' }),
    scope: Type.String(),
  },
  { title: 'TokenResponse' },
);

export const RegisterRequest = Type.Object({ email: Email, password: Password }, { title: 'RegisterRequest' });

export const AccountPublic = Type.Object(
  {
    id: Type.String({ format: 'uuid' }),
    email: Type.String(),
    role: RoleSchema,
    disabled: Type.Boolean(),
    created_at: Timestamp,
    updated_at: Timestamp,
  },
  { title: 'Account' },
);

export const Me = Type.Object(
  {
    account: AccountPublic,
    scopes: Type.Array(ScopeSchema),
    auth: Type.Unsafe<'session' | 'api_key'>({ type: 'string', enum: ['session', 'api_key'] }),
  },
  { title: 'Me' },
);

export const AccountCreate = Type.Object({ email: Email, password: Password, role: RoleSchema }, { title: 'AccountCreate' });

export const AccountUpdate = Type.Object(
  { role: Type.Optional(RoleSchema), disabled: Type.Optional(Type.Boolean()), password: Type.Optional(Password) },
  { title: 'AccountUpdate' },
);

export const AccountList = Type.Array(AccountPublic);

export const AccountListQuery = Type.Object({
  limit: Type.Integer({ minimum: 1, maximum: 1000, default: 100 }),
  after: Type.Optional(Type.String({ description: 'Last id of the previous page' })),
});

export const IdParams = Type.Object({ id: Type.String({ description: 'UUID, any case' }) });

export const ApiKeyCreate = Type.Object(
  {
    name: Type.String({ minLength: 1, maxLength: 100 }),
    scopes: Type.Optional(Type.Array(ScopeSchema, { minItems: 1, maxItems: SCOPES.length, uniqueItems: true, description: 'Default: all of the account role' })),
    expires_in: Type.Optional(Type.Integer({ minimum: 60, maximum: 315_360_000, description: 'Seconds; default: never expires' })),
  },
  { title: 'ApiKeyCreate' },
);

export const ApiKeyPublic = Type.Object(
  {
    id: Type.String({ format: 'uuid' }),
    name: Type.String(),
    prefix: Type.String({ description: 'The first characters of the key, to recognise it' }),
    scopes: Type.Array(Type.String({ examples: ['users:read'] })),
    created_at: Timestamp,
    expires_at: NullableTimestamp,
    revoked_at: NullableTimestamp,
  },
  { title: 'ApiKey' },
);

export const ApiKeyCreated = Type.Object(
  { ...ApiKeyPublic.properties, key: Type.String({ description: 'The key: shown once, never again' }) },
  { title: 'ApiKeyCreated' },
);

export const ApiKeyList = Type.Array(ApiKeyPublic);

/** 409 is not among the shared error responses (src/platform/http/error-schemas.ts); declared here for the routes that answer it. */
export const CONFLICT = { 409: { ...ErrorBody, description: 'Conflict (email already registered, or a change to your own account)' } };
