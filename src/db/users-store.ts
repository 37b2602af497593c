/**
 * The users storage interface: the only thing services see of a database's users.
 *
 * Adapters live in sibling folders (`postgres/`, `cassandra/`) and every one of them passes the same contract
 * suite (test/storage.contract.ts). Adapters throw `AppError`s from the catalogue: kind `unavailable` when the
 * database cannot be reached, `timeout` when a deadline expired and the work was cancelled, `bad_input`
 * (`invalidCursor`, `badInput`) for input the database refused.
 */

export interface User {
  id: string;
  name: string;
  email: string;
  age: number;
  created_at: Date;
  updated_at: Date;
}

/** What a caller supplies to create a user; the adapter stamps id and timestamps. */
export interface NewUser {
  name: string;
  email: string;
  age: number;
}

/** A partial update: fields left undefined keep their value. */
export type UserPatch = Partial<NewUser>;

/** A page may be shared by callers who asked for it together (src/platform/lib/coalesce.ts): never change one. */
export interface Page {
  readonly items: readonly User[];
  /** Opaque; pass back as `cursor` for the next page. `null` when no more rows exist. */
  readonly nextCursor: string | null;
}

/** Per-call options. */
export interface CallOptions {
  /**
   * Absolute deadline as a `performance.now()` timestamp. The adapter cancels the database work on the
   * server when it passes and throws `timeout`. Unset: the adapter's default statement timeout applies.
   */
  deadline?: number;
  /**
   * Run this read as a statement of its own: adapters that share concurrent identical reads (coalescing) must
   * not share it. For callers that mean to exercise the database, such as `/performance/{async,sync}`.
   */
  alone?: boolean;
  /**
   * Aborts when the caller no longer wants the answer (its client went away): the adapter stops waiting for a
   * connection and cancels the work, as at a deadline. Work shared with other callers is not cancelled. (Not
   * `signal`: routes pass the request as options, and Fastify's `request.signal` aborts once a body is read.)
   */
  clientGone?: AbortSignal;
  /** Read-your-writes when reads may be served by a replica (src/db/replica-router.ts). */
  readYourWrites?: ReadYourWrites;
}

/**
 * A client's idempotency key for a create (the `Idempotency-Key` header): the first write with it is stored together
 * with the key, in the same transaction (PostgreSQL) or claimed before it (Cassandra), so a retry of the same request
 * returns the same users and can never write a second time.
 */
export interface IdempotencyKey {
  /** Whose key it is (an account, or `anonymous`): two clients' keys never collide. */
  scope: string;
  key: string;
  /** A digest of the operation and its input: the same key with another input is refused (`idempotencyMismatch`). */
  fingerprint: string;
}

/**
 * A client's consistency token, in and out. Writes set `token` once acknowledged; a read given `after` (a token
 * from an earlier write) reflects at least that write. Without replicas there is nothing to honour: both unused.
 */
export interface ReadYourWrites {
  readonly after: string | undefined;
  token: string | undefined;
}

export interface WriteOptions extends CallOptions {
  idempotency?: IdempotencyKey;
}

/**
 * What an update or delete requires of the user's current state (HTTP `If-Match`): that it exists, or that its
 * `updated_at` is one of `versions` (compared to the millisecond, the precision of `User`). The adapter checks it
 * atomically with the write, so of concurrent changes expecting one version at most one happens; when it does not
 * hold (an absent user included) nothing changes and the adapter throws `preconditionFailed`.
 */
export type Expected = 'exists' | { readonly versions: readonly Date[] };

export interface ChangeOptions extends CallOptions {
  expect?: Expected;
}

/** Whether `current` (null: absent) meets `expect`: for adapters that check it against a row read in the write's round. */
export function meets(expect: Expected, current: { updated_at: Date } | null): boolean {
  if (current === null) return false;
  return expect === 'exists' || expect.versions.some((v) => v.getTime() === current.updated_at.getTime());
}

export interface StreamOptions extends CallOptions {
  /** Rows in total; 0 yields nothing. */
  limit: number;
  /** Rows fetched from the database per round trip. */
  fetchSize: number;
  /** Aborting stops the stream and releases its connection at once (client went away). */
  signal?: AbortSignal;
  /**
   * The caller reads every row once, in order, and does not mind a connection of its own (an export): an adapter
   * may take a faster path (PostgreSQL: a binary COPY, src/db/postgres/copy-out.ts). Pages stay at most
   * `fetchSize` rows; `deadline` is not applied on that path.
   */
  bulk?: boolean;
}

/**
 * The users operations, and nothing else: what a caller of users needs, so a decorator (a cache, a replica
 * router) wraps it in a few lines. Probes, pools and lifecycle belong to the backend (src/db/backend.ts).
 */
export interface UsersStore {
  /** With `idempotency`, a retry returns the first call's user (a key still being written: `idempotencyInFlight`). */
  create(input: NewUser, opts?: WriteOptions): Promise<User>;
  /** All or nothing: either every user is stored or none is. Idempotent as `create`. */
  createMany(inputs: NewUser[], opts?: WriteOptions): Promise<User[]>;
  get(id: string, opts?: CallOptions): Promise<User | null>;
  /** Returns null when the user does not exist (with `expect`: throws `preconditionFailed`). `updated_at` always moves forward by at least 1 ms. */
  update(id: string, patch: UserPatch, opts?: ChangeOptions): Promise<User | null>;
  /** Idempotent: deleting a missing user is not an error (unless `expect` says it must exist). */
  delete(id: string, opts?: ChangeOptions): Promise<void>;
  /** A stable order; every row is visited exactly once by following `nextCursor`. */
  list(query: { limit: number; cursor?: string }, opts?: CallOptions): Promise<Page>;
  /** Pages of at most `fetchSize` rows, read from the database one round trip per page, with backpressure. */
  stream(opts: StreamOptions): AsyncIterable<User[]>;
}
