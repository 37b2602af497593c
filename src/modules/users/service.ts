/**
 * The users service: the rules of the resource between the routes and the repository.
 *
 * Path ids are parsed here (any case in, lowercase out, else `invalidUuid`), names are stored trimmed, and the
 * contract's order of checks for updates (id, existence, then "nothing to change") lives in one place.
 * Framework-free: it sees only the repository interface.
 */
import { errors } from '../../platform/errors.ts';
import { parseUuid } from '../../platform/lib/uuid.ts';
import { createHash } from 'node:crypto';
import {
  meets, type CallOptions, type ChangeOptions, type Expected, type NewUser, type Page, type User, type UserPatch, type UsersStore,
  type WriteOptions,
} from '../../db/users-store.ts';

/** A client's idempotency key (the `Idempotency-Key` header) and whose it is. */
export interface ClientKey {
  scope: string;
  key: string;
}

export interface CreateOptions extends CallOptions {
  idempotencyKey?: ClientKey;
}

export interface UsersService {
  create(input: NewUser, opts?: CreateOptions): Promise<User>;
  createMany(inputs: NewUser[], opts?: CreateOptions): Promise<User[]>;
  get(rawId: string, opts?: CallOptions): Promise<User>;
  /** With `expect` (If-Match), checked by the store atomically with the write: `preconditionFailed` when it fails. */
  update(rawId: string, patch: { [K in keyof NewUser]?: NewUser[K] | null }, opts?: CallOptions, expect?: Expected): Promise<User>;
  delete(rawId: string, opts?: CallOptions, expect?: Expected): Promise<void>;
  list(query: { limit: number; cursor?: string }, opts?: CallOptions): Promise<Page>;
}

/** A create's input as stored: the name trimmed (the import applies the same, src/modules/bulk/rows.ts). */
export const clean = (u: NewUser): NewUser => ({ name: u.name.trim(), email: u.email, age: u.age });

/**
 * The store's options for a create: the key, with a digest of the operation and of what it writes, so the same key
 * sent with another body (or to the other create) is told apart from a retry.
 */
function writeOptions(operation: string, input: unknown, opts: CreateOptions | undefined): WriteOptions | undefined {
  const given = opts?.idempotencyKey;
  if (given === undefined) return opts;
  const fingerprint = createHash('sha256').update(JSON.stringify([operation, input])).digest('hex');
  return { deadline: opts?.deadline, idempotency: { scope: given.scope, key: given.key, fingerprint } };
}

/**
 * The store's options for a change: the caller's, with the condition when there is one (a list of versions that
 * names none can never hold: refused without a write).
 */
function changeOptions(opts: CallOptions | undefined, expect: Expected | undefined): ChangeOptions | undefined {
  if (expect === undefined) return opts;
  if (expect !== 'exists' && expect.versions.length === 0) throw errors.preconditionFailed();
  return { deadline: opts?.deadline, clientGone: opts?.clientGone, readYourWrites: opts?.readYourWrites, expect };
}

function idOf(raw: string): string {
  const id = parseUuid(raw);
  if (id === null) throw errors.invalidUuid();
  return id;
}

export function createUsersService(repo: UsersStore): UsersService {
  return {
    create(input, opts) {
      const user = clean(input);
      return repo.create(user, writeOptions('create', user, opts));
    },
    createMany(inputs, opts) {
      const users = inputs.map(clean);
      return repo.createMany(users, writeOptions('createMany', users, opts));
    },

    async get(rawId, opts) {
      const user = await repo.get(idOf(rawId), opts);
      if (user === null) throw errors.userNotFound();
      return user;
    },

    async update(rawId, body, opts, expect) {
      const id = idOf(rawId);
      const change = changeOptions(opts, expect);
      // Only fields present and non-null change; anything else in the body was already dropped by validation.
      const patch: UserPatch = {};
      if (body.name != null) patch.name = body.name.trim();
      if (body.email != null) patch.email = body.email;
      if (body.age != null) patch.age = body.age;
      if (Object.keys(patch).length === 0) {
        // Nothing is written, so the condition is checked against the database's row (never a cached copy).
        const current = await repo.get(id, expect ? { deadline: opts?.deadline, alone: true } : opts);
        if (expect && !meets(expect, current)) throw errors.preconditionFailed();
        if (current === null) throw errors.userNotFound();
        throw errors.noFieldsToUpdate();
      }
      const user = await repo.update(id, patch, change);
      if (user === null) throw errors.userNotFound();
      return user;
    },

    delete: async (rawId, opts, expect) => {
      const id = idOf(rawId);
      await repo.delete(id, changeOptions(opts, expect));
    },
    list: (query, opts) => repo.list(query, opts),
  };
}
