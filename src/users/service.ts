/**
 * The users service: the rules of the resource between the routes and the repository.
 *
 * Path ids are parsed here (any case in, lowercase out, else `invalidUuid`), names are stored trimmed, and the
 * contract's order of checks for updates (id, existence, then "nothing to change") lives in one place.
 * Framework-free: it sees only the repository interface.
 */
import { errors } from '../errors.ts';
import { parseUuid } from '../lib/uuid.ts';
import type { CallOptions, NewUser, Page, User, UserPatch, UsersRepository } from '../storage/repository.ts';

export interface UsersService {
  create(input: NewUser, opts?: CallOptions): Promise<User>;
  createMany(inputs: NewUser[], opts?: CallOptions): Promise<User[]>;
  get(rawId: string, opts?: CallOptions): Promise<User>;
  update(rawId: string, patch: { [K in keyof NewUser]?: NewUser[K] | null }, opts?: CallOptions): Promise<User>;
  delete(rawId: string, opts?: CallOptions): Promise<void>;
  list(query: { limit: number; cursor?: string }, opts?: CallOptions): Promise<Page>;
}

const clean = (u: NewUser): NewUser => ({ name: u.name.trim(), email: u.email, age: u.age });

function idOf(raw: string): string {
  const id = parseUuid(raw);
  if (id === null) throw errors.invalidUuid();
  return id;
}

export function createUsersService(repo: UsersRepository): UsersService {
  return {
    create: (input, opts) => repo.create(clean(input), opts),
    createMany: (inputs, opts) => repo.createMany(inputs.map(clean), opts),

    async get(rawId, opts) {
      const user = await repo.get(idOf(rawId), opts);
      if (user === null) throw errors.userNotFound();
      return user;
    },

    async update(rawId, body, opts) {
      const id = idOf(rawId);
      // Only fields present and non-null change; anything else in the body was already dropped by validation.
      const patch: UserPatch = {};
      if (body.name != null) patch.name = body.name.trim();
      if (body.email != null) patch.email = body.email;
      if (body.age != null) patch.age = body.age;
      if (Object.keys(patch).length === 0) {
        if ((await repo.get(id, opts)) === null) throw errors.userNotFound();
        throw errors.noFieldsToUpdate();
      }
      const user = await repo.update(id, patch, opts);
      if (user === null) throw errors.userNotFound();
      return user;
    },

    delete: (rawId, opts) => repo.delete(idOf(rawId), opts),
    list: (query, opts) => repo.list(query, opts),
  };
}
