/**
 * What a database backend reports to the platform: its pool figures and a note of every call it made. The
 * database layer fills these in; metrics and health read them, without knowing which backend it is.
 */
import type { ErrorKind } from './errors.ts';

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

/** One read replica as the replica router sees it (src/db/replica-router.ts), for health and metrics. */
export interface ReplicaStats {
  /** `host:port`. */
  name: string;
  /**
   * `up`: serving reads; `lagging`: answering but further behind the primary than the bound (or its lag cannot
   * be measured); `down`: its last probe or read failed.
   */
  state: 'up' | 'lagging' | 'down';
  /** How far behind the primary its data may be now, at most (ms, measured); null when down or never measured. */
  lagMs: number | null;
  /** WAL bytes the primary had written and the replica had not yet replayed, at its last probe. */
  lagBytes: number | null;
  /** Replay paused on the replica (`pg_wal_replay_pause()`). */
  replayPaused: boolean;
  /** Reads (pages and streams) sent to it since start. */
  reads: number;
}

/** Told about every database call (statement, transaction, cursor, page): its duration and, if it failed, its kind. */
export type QueryObserver = (seconds: number, failure: ErrorKind | undefined) => void;
