/**
 * The storage interface: the only thing services see of a database.
 *
 * Adapters live in sibling folders (`postgres/`, `cassandra/`) and every one of them passes the same contract
 * suite (test/storage.contract.ts). Adapters throw `AppError`s from the catalogue: `unavailable` (503) when the
 * database cannot be reached, `timeout` (504) when a deadline expired and the work was cancelled,
 * `invalidCursor` and `badInput` (400) for input the database refused.
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

/** A page may be shared by callers who asked for it together (src/lib/coalesce.ts): never change one. */
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
}

export interface StreamOptions extends CallOptions {
  /** Rows in total; 0 yields nothing. */
  limit: number;
  /** Rows fetched from the database per round trip. */
  fetchSize: number;
  /** Aborting stops the stream and releases its connection at once (client went away). */
  signal?: AbortSignal;
}

/**
 * The kind of a failed database call, from the catalogue status the adapter mapped it to (503 `unavailable`,
 * 504 `timeout`, 400 `bad_input`, anything else `other`). Adapters report it, so metrics never need to know
 * a backend's error codes.
 */
export type DbErrorKind = 'unavailable' | 'timeout' | 'bad_input' | 'other';

/** Told about every database call (statement, transaction, cursor, page): its duration and, if it failed, the kind. */
export type QueryObserver = (seconds: number, failure: DbErrorKind | undefined) => void;

/** The `DbErrorKind` of a catalogue status code. */
export function errorKindOf(statusCode: number): DbErrorKind {
  switch (statusCode) {
    case 503: return 'unavailable';
    case 504: return 'timeout';
    case 400: return 'bad_input';
    default: return 'other';
  }
}

/** One database host as the driver sees it (backends with a multi-host driver: Cassandra). */
export interface HostStats {
  /** `address:port`. */
  host: string;
  /** The driver considers the host usable (its connections are open). */
  up: boolean;
  openConnections: number;
  /** Requests sent to this host and not yet answered. */
  inFlight: number;
}

/** Connection pool figures for health and metrics. */
export interface PoolStats {
  /** Connections running a query, cursor or transaction. */
  active: number;
  /** Connections open and free. */
  idle: number;
  /** Callers queued for a connection. */
  waiting: number;
  /** Upper bound of connections. */
  max: number;
  /** Per-host driver figures, for backends that talk to several hosts. */
  hosts?: HostStats[];
}

export interface UsersRepository {
  readonly backend: 'postgres' | 'cassandra';
  create(input: NewUser, opts?: CallOptions): Promise<User>;
  /** All or nothing: either every user is stored or none is. */
  createMany(inputs: NewUser[], opts?: CallOptions): Promise<User[]>;
  get(id: string, opts?: CallOptions): Promise<User | null>;
  /** Returns null when the user does not exist. `updated_at` always moves forward by at least 1 ms. */
  update(id: string, patch: UserPatch, opts?: CallOptions): Promise<User | null>;
  /** Idempotent: deleting a missing user is not an error. */
  delete(id: string, opts?: CallOptions): Promise<void>;
  /** A stable order; every row is visited exactly once by following `nextCursor`. */
  list(query: { limit: number; cursor?: string }, opts?: CallOptions): Promise<Page>;
  /** Pages of at most `fetchSize` rows, read from the database one round trip per page, with backpressure. */
  stream(opts: StreamOptions): AsyncIterable<User[]>;
  /** Runs a real database operation lasting `seconds` (for the contract's slow endpoints). */
  sleep(seconds: number, opts?: CallOptions): Promise<void>;
  /** Resolves when the database answers. */
  ping(opts?: CallOptions): Promise<void>;
  /** True when the schema is at the version this build expects. */
  schemaReady(opts?: CallOptions): Promise<boolean>;
  poolStats(): PoolStats;
  close(): Promise<void>;
}
