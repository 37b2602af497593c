/**
 * The replica router: a decorator of `UsersStore` that sends list and stream reads to a read replica that is
 * close enough behind the primary, and everything else (writes, reads by id) to the primary.
 *
 * Which replica may serve, and how far behind each one is, is the adapter's business (`ReadReplicas`, e.g.
 * src/db/postgres/replicas.ts): it measures lag and issues consistency tokens. This file holds the rules that do
 * not depend on the database: a read with a token goes only where that token's write is visible; a replica that
 * fails to answer a read is reported down and the read is retried on the primary, so a replica that stops never
 * costs a client an error. The backend factory (src/db/backend.ts) applies it when replicas are configured.
 */
import { kindOf } from '../platform/errors.ts';
import type { PoolStats, ReplicaStats } from '../platform/probes.ts';
import type { Backend } from './backend.ts';
import type { CallOptions, StreamOptions, User, UsersStore } from './users-store.ts';

/** A replica chosen for one read. */
export interface ReplicaChoice {
  readonly store: UsersStore;
  /** The read failed for want of the replica: skip it until it answers a probe again. */
  down(err: unknown): void;
}

/** The read replicas of a backend, as the router needs them. */
export interface ReadReplicas {
  /** Throws `invalidConsistencyToken` (kind `bad_input`) for a token this backend cannot have issued. */
  checkToken(token: string): void;
  /** A replica that may serve a read now (within the lag bound and, given a token, past its write), if any. */
  pick(after: string | undefined): ReplicaChoice | undefined;
  /** A token covering every write acknowledged before this call. */
  token(): Promise<string>;
  stats(): ReplicaStats[];
  /** The replicas' pools, by name (`replica:host:port`). */
  pools(): Record<string, PoolStats>;
  close(): Promise<void>;
}

export interface RouterDeps {
  log: { warn(obj: object, msg: string): void };
}

/** `backend` with its list and stream reads routed to `replicas`, their figures in its probes, closed with it. */
export function withReplicas(backend: Backend, replicas: ReadReplicas, deps: RouterDeps): Backend {
  return {
    ...backend,
    users: routeReads(backend.users, replicas, deps),
    checkConsistencyToken: (token) => replicas.checkToken(token),
    probes: {
      ...backend.probes,
      pools: () => ({ ...backend.probes.pools(), ...replicas.pools() }),
      replicas: () => replicas.stats(),
    },
    async close() {
      await Promise.all([replicas.close(), backend.close()]);
    },
  };
}

/** The users store over `primary` with list and stream reads sent to `replicas` when one may serve them. */
export function routeReads(primary: UsersStore, replicas: ReadReplicas, { log }: RouterDeps): UsersStore {
  /** The client's token, checked first: a bad one is refused before anything is read or written. */
  function after(opts: CallOptions | undefined): string | undefined {
    const token = opts?.readYourWrites?.after;
    if (token !== undefined) replicas.checkToken(token);
    return token;
  }

  /** Runs a write on the primary, then hands its token to the caller. */
  async function written<T>(opts: CallOptions | undefined, write: () => Promise<T>): Promise<T> {
    after(opts);
    const result = await write();
    const slot = opts?.readYourWrites;
    if (slot) {
      // The write is acknowledged already: failing the request now would report a stored write as failed. The
      // client gets no token instead, and its next read may come from a replica within the lag bound.
      slot.token = await replicas.token().catch((err: unknown) => {
        log.warn({ err }, 'no consistency token for an acknowledged write: the primary did not report its position');
        return undefined;
      });
    }
    return result;
  }

  /** Runs a read on a replica that may serve it, else on the primary; a replica that is down yields to the primary. */
  async function read<T>(opts: CallOptions | undefined, run: (store: UsersStore) => Promise<T>): Promise<T> {
    const choice = replicas.pick(after(opts));
    if (choice === undefined) return run(primary);
    try {
      return await run(choice.store);
    } catch (err) {
      if (kindOf(err) !== 'unavailable') throw err;
      choice.down(err);
      return run(primary);
    }
  }

  return {
    create: (input, opts) => written(opts, () => primary.create(input, opts)),
    createMany: (inputs, opts) => written(opts, () => primary.createMany(inputs, opts)),
    update: (id, patch, opts) => written(opts, () => primary.update(id, patch, opts)),
    delete: (id, opts) => written(opts, () => primary.delete(id, opts)),
    // A read by id is one cheap statement, and the read before an update: it stays on the primary.
    get: (id, opts) => {
      after(opts);
      return primary.get(id, opts);
    },
    list: (query, opts) => read(opts, (store) => store.list(query, opts)),
    stream: (opts) => streamFrom(primary, () => replicas.pick(after(opts)), opts),
  };
}

/**
 * A stream from the chosen replica, or the primary. Until its first page arrives a replica that is down yields to
 * the primary; after that, rows have gone out and a failure ends the stream as it would on the primary.
 */
async function* streamFrom(
  primary: UsersStore,
  pick: () => ReplicaChoice | undefined,
  opts: StreamOptions,
): AsyncGenerator<User[]> {
  // Chosen when the stream starts, not when it is created, so the choice (and a bad token's refusal) is current.
  const choice = pick();
  if (choice === undefined) {
    yield* primary.stream(opts);
    return;
  }
  const pages = choice.store.stream(opts)[Symbol.asyncIterator]();
  let page: IteratorResult<User[]>;
  try {
    page = await pages.next();
  } catch (err) {
    if (kindOf(err) !== 'unavailable') throw err;
    choice.down(err);
    yield* primary.stream(opts);
    return;
  }
  try {
    for (; !page.done; page = await pages.next()) yield page.value;
  } finally {
    await pages.return?.(undefined);
  }
}
