/**
 * TypeBox schemas of the users API: one source for request validation, response serialization
 * (fast-json-stringify) and the OpenAPI document. A separate type per use: create, update, public.
 */
import { Type, type Static } from 'typebox';
import {
  AGE_MAX, AGE_MIN, EMAIL_MAX, EMAIL_PATTERN, NAME_MAX, NAME_MIN, NAME_PATTERN, NAME_RAW_MAX,
} from '../../db/user-fields.ts';
import { patternIssue } from '../../platform/http/validation.ts';

// The rules themselves live in src/db/user-fields.ts, shared with the storage adapters.
const Name = Type.String({
  minLength: NAME_MIN, maxLength: NAME_RAW_MAX, pattern: NAME_PATTERN, examples: ['Ada Lovelace'],
  ...patternIssue(`String should have ${NAME_MIN} to ${NAME_MAX} characters after trimming`, 'string_too_long_or_blank'),
});
const Email = Type.String({
  format: 'email', maxLength: EMAIL_MAX, pattern: EMAIL_PATTERN, examples: ['ada@example.com'],
  ...patternIssue('value is not a valid email address', 'value_error'),
});
const Age = Type.Integer({ minimum: AGE_MIN, maximum: AGE_MAX, examples: [36] });

export const UserCreate = Type.Object({ name: Name, email: Email, age: Age }, { title: 'UserCreate' });
export type UserCreate = Static<typeof UserCreate>;

/** Every field optional; `null` means "leave unchanged", as in the original service. */
const orNull = <T extends { type: string }>(s: T) => Type.Unsafe<Static<T> | null>({ ...s, type: [s.type, 'null'] });
export const UserUpdate = Type.Object(
  { name: Type.Optional(orNull(Name)), email: Type.Optional(orNull(Email)), age: Type.Optional(orNull(Age)) },
  { title: 'UserUpdate' },
);
export type UserUpdate = Static<typeof UserUpdate>;

/** Serialized by fast-json-stringify as ISO-8601 UTC with milliseconds and a `Z`. */
const Timestamp = Type.Unsafe<Date | string>({ type: 'string', format: 'date-time', examples: ['2024-01-10T12:34:56.789Z'] });

export const UserPublic = Type.Object(
  {
    id: Type.String({ format: 'uuid' }),
    name: Type.String(),
    email: Type.String(),
    age: Type.Integer(),
    created_at: Timestamp,
    updated_at: Timestamp,
  },
  { title: 'User' },
);

export const UserList = Type.Array(UserPublic);

/** `{"users": [...]}`; a bare array is accepted too and wrapped before validation (see routes). */
export const batchCreate = (max: number) =>
  Type.Object(
    { users: Type.Array(UserCreate, { minItems: 1, maxItems: max }) },
    { title: 'BatchCreate', description: 'Either this object or a bare array of UserCreate.' },
  );
export type BatchCreate = Static<ReturnType<typeof batchCreate>>;

/** The batch body as the document describes it: the object above, or the bare array it wraps. */
export const batchCreateDocumented = (max: number) =>
  Type.Union([
    batchCreate(max),
    Type.Array(UserCreate, { minItems: 1, maxItems: max, title: 'BatchCreateArray', description: 'A bare array of UserCreate.' }),
  ]);

export const BatchCreated = Type.Object({ created: Type.Array(UserPublic) });

export const IdParams = Type.Object({ id: Type.String({ description: 'User id (UUID, any case)' }) });

export const ListQuery = Type.Object({
  limit: Type.Integer({ minimum: 1, maximum: 10000, default: 10 }),
  cursor: Type.Optional(Type.String({ description: 'Opaque cursor from X-Next-Cursor or the Link header' })),
});

export const StreamFormat = Type.Unsafe<'json' | 'ndjson' | 'csv'>({ type: 'string', enum: ['json', 'ndjson', 'csv'] });

export const StreamQuery = Type.Object({
  limit: Type.Integer({ minimum: 0, maximum: 1_000_000, default: 1000 }),
  fetch_size: Type.Integer({ minimum: 10, maximum: 1000, default: 100 }),
  format: Type.Optional(StreamFormat),
});

export const StreamPagesQuery = Type.Object({
  limit: Type.Integer({ minimum: 0, maximum: 1_000_000, default: 1000 }),
  fetch_size: Type.Integer({ minimum: 10, maximum: 1000, default: 100 }),
  max_pages: Type.Integer({ minimum: 0, maximum: 100, default: 10 }),
});

export const StreamPages = Type.Object({
  total_rows_processed: Type.Integer(),
  pages_info: Type.Array(
    Type.Object({
      page_number: Type.Integer(),
      rows_in_page: Type.Integer(),
      sample_user: Type.Union([
        Type.Object({ id: Type.String(), name: Type.String(), email: Type.String() }),
        Type.Null(),
      ]),
    }),
  ),
  metadata: Type.Object({
    fetch_size: Type.Integer(),
    max_pages_limit: Type.Integer(),
    streaming_mode: Type.Literal('page_by_page'),
  }),
});
