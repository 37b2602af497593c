/**
 * PostgreSQL read replicas for the replica router (src/db/replica-router.ts): a users store per streaming replica,
 * and the monitor that measures how far behind the primary each one is.
 *
 * Lag is measured, never assumed. Every `pollMs`, on connections of their own, the monitor asks the primary for
 * its WAL write position (`pg_current_wal_lsn()`) and remembers when it asked; then each replica for its replay
 * position (`pg_last_wal_replay_lsn()`). A replica whose replay position has reached a position the primary
 * reported at time t holds every write acknowledged before t: it is "fresh as of" t. It serves reads only while
 * now - t is within `maxLagMs`, so the bound holds at the moment of the read, however stale the last probe is.
 * Everything is measured on this process's clock: no clock skew between hosts, and an idle primary (no new WAL)
 * leaves a replica that has caught up fresh rather than "behind since the last commit", which is what
 * `now() - pg_last_xact_replay_timestamp()` would say.
 *
 * Consistency tokens are primary WAL positions read after the write was acknowledged (with the default
 * `synchronous_commit = on` the commit record is written by then): a replica whose replay position has reached
 * a token holds that write.
 */
import postgres, { type Sql } from 'postgres';
import { errors } from '../../platform/errors.ts';
import { singleFlight } from '../../platform/lib/coalesce.ts';
import { withDeadline } from '../../platform/lib/deadline.ts';
import type { PoolStats, QueryObserver, ReplicaStats } from '../../platform/probes.ts';
import type { ReadReplicas, ReplicaChoice } from '../replica-router.ts';
import type { UsersStore } from '../users-store.ts';
import { createDb, type Db } from './db.ts';
import { toAppError } from './errors.ts';
import { createPostgresUsersStore } from './users.ts';

export interface PostgresReplicasOptions {
  primaryUrl: string;
  urls: string[];
  maxLagMs: number;
  pollMs: number;
  /** Pool settings of each replica's pool, as the primary's. */
  max: number;
  acquireTimeoutMs: number;
  statementTimeoutMs: number;
  log: { info(msg: string): void; warn(obj: object, msg: string): void };
  onQuery?: QueryObserver;
}

/** Bound on one probe or token query: a replica that does not answer within it is down. */
const PROBE_TIMEOUT_MS = 1000;

/** A WAL position (`16/B374D848`) as a number, or null when the text is not one. */
export function parseLsn(text: string): bigint | null {
  const m = /^([0-9A-F]{1,8})\/([0-9A-F]{1,8})$/i.exec(text);
  return m ? (BigInt(`0x${m[1]}`) << 32n) | BigInt(`0x${m[2]}`) : null;
}

/** A one-connection client for probes, apart from the pools, so probes never queue behind reads. */
function probeClient(url: string, applicationName: string): Sql {
  return postgres(url, {
    max: 1,
    connect_timeout: 1,
    idle_timeout: 60,
    backoff: () => 0.05,
    onnotice: () => {},
    connection: { application_name: applicationName, statement_timeout: PROBE_TIMEOUT_MS },
  });
}

const bounded = <T>(work: Promise<T>) => withDeadline(work, PROBE_TIMEOUT_MS, { mapError: toAppError });

interface Replica {
  readonly name: string;
  readonly db: Db;
  readonly probe: Sql;
  readonly choice: ReplicaChoice;
  /** Answered its last probe and no read has failed since. */
  up: boolean;
  /** A probe still running on its connection (past its deadline, the server hanging): the next one waits. */
  probing: boolean;
  /** Replay position at the last probe. */
  replay: bigint | null;
  /** `performance.now()` of the latest primary sample this replica has been seen to hold; -Infinity: none. */
  freshAsOf: number;
  lagBytes: number | null;
  replayPaused: boolean;
  reads: number;
}

/** `host:port` of a PostgreSQL URL, for names in health, metrics and logs (never its credentials). */
function nameOf(url: string): string {
  const u = new URL(url);
  return `${u.hostname}:${u.port || '5432'}`;
}

export function openPostgresReplicas(opts: PostgresReplicasOptions): ReadReplicas {
  const { log, maxLagMs, pollMs } = opts;
  const primary = probeClient(opts.primaryUrl, 'spate-replica-monitor');
  /** Primary WAL positions and when they were asked for, oldest first; kept a little longer than the bound. */
  const history: { lsn: bigint; at: number }[] = [];
  const keepMs = maxLagMs + 4 * pollMs;

  const replicas: Replica[] = opts.urls.map((url) => {
    const name = nameOf(url);
    const db = createDb({ ...opts, url, applicationName: 'spate-replica' });
    // Replicas serve reads only: the idempotency window is the primary's concern.
    const store: UsersStore = createPostgresUsersStore(db, { idempotencyTtlS: 86_400, copyUrl: url });
    const replica: Replica = {
      name, db, probe: probeClient(url, 'spate-replica-monitor'),
      choice: { store, down: (err) => markDown(replica, err) },
      up: false, probing: false, replay: null, freshAsOf: -Infinity, lagBytes: null, replayPaused: false, reads: 0,
    };
    return replica;
  });

  function markDown(r: Replica, err: unknown): void {
    if (r.up) log.warn({ err, replica: r.name }, 'read replica down: reads go to the primary');
    r.up = false;
  }

  /** A probe still running on its connection (past its deadline, the server hanging): the next one waits. */
  let sampling = false;
  async function samplePrimary(): Promise<void> {
    if (sampling) return;
    sampling = true;
    const at = performance.now();
    const work = primary<{ lsn: string }[]>`SELECT pg_current_wal_lsn()::text AS lsn`;
    work.then(() => { sampling = false; }, () => { sampling = false; });
    try {
      const [row] = await bounded(work);
      const lsn = parseLsn(row!.lsn)!;
      history.push({ lsn, at });
      while (history.length > 1 && history[0]!.at < at - keepMs) history.shift();
    } catch {
      // No sample: replicas stop getting fresher, so after the bound they stop serving. Lag cannot be measured
      // without the primary, and reads then go to the primary anyway.
    }
  }

  async function probe(r: Replica): Promise<void> {
    r.probing = true;
    const work = r.probe<{ standby: boolean; replay: string | null; paused: boolean | null }[]>`
      SELECT pg_is_in_recovery() AS standby, pg_last_wal_replay_lsn()::text AS replay,
        CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() END AS paused`;
    work.then(() => { r.probing = false; }, () => { r.probing = false; });
    try {
      const [row] = await bounded(work);
      const replay = row!.standby && row!.replay !== null ? parseLsn(row!.replay) : null;
      if (replay === null) throw new Error('not a streaming replica (not in recovery)');
      const now = performance.now();
      // The newest primary sample it holds (positions only grow, so search from the newest). Taken from this
      // probe alone: a replica restarted after a crash may hold less than it did before.
      let fresh = -Infinity;
      for (let i = history.length - 1; i >= 0; i--) {
        if (history[i]!.lsn <= replay) {
          fresh = history[i]!.at;
          break;
        }
      }
      // Behind every sample kept: fresh as of a time before the oldest of them (kept further back is not known).
      r.freshAsOf = Number.isFinite(fresh) ? fresh : Math.min(r.freshAsOf, history[0]?.at ?? -Infinity);
      const newest = history.at(-1)?.lsn;
      r.replay = replay;
      r.lagBytes = newest === undefined ? null : Math.max(0, Number(newest - replay));
      r.replayPaused = row!.paused === true;
      if (!r.up) log.info(`read replica ${r.name} answers (lag ${Number.isFinite(r.freshAsOf) ? Math.round(now - r.freshAsOf) : 'unknown'} ms)`);
      r.up = true;
    } catch (err) {
      markDown(r, err);
    }
  }

  let closed = false;
  let timer: NodeJS.Timeout | undefined;
  async function tick(): Promise<void> {
    await samplePrimary();
    if (closed) return;
    // A replica that hangs keeps its own probe waiting, not the others'.
    for (const r of replicas) if (!r.probing) void probe(r);
    timer = setTimeout(() => void tick(), pollMs).unref();
  }
  void tick();

  const usable = (r: Replica, now: number, after: bigint | null) =>
    r.up && now - r.freshAsOf <= maxLagMs && (after === null || (r.replay !== null && r.replay >= after));

  let next = 0;
  // Writes acknowledged together share one position query, sent after every one of them was acknowledged.
  const position = singleFlight<void, string>(async (_args, sent) => {
    sent();
    const [row] = await bounded(primary<{ lsn: string }[]>`SELECT pg_current_wal_lsn()::text AS lsn`);
    return row!.lsn;
  });

  return {
    checkToken(token) {
      if (token.length > 17 || parseLsn(token) === null) throw errors.invalidConsistencyToken();
    },

    pick(afterToken) {
      const after = afterToken === undefined ? null : parseLsn(afterToken);
      const now = performance.now();
      // Round robin over the usable replicas.
      for (let i = 0; i < replicas.length; i++) {
        const r = replicas[(next + i) % replicas.length]!;
        if (!usable(r, now, after)) continue;
        next = (next + i + 1) % replicas.length;
        r.reads++;
        return r.choice;
      }
      return undefined;
    },

    token: () => position('', undefined),

    stats() {
      const now = performance.now();
      return replicas.map((r): ReplicaStats => ({
        name: r.name,
        state: !r.up ? 'down' : usable(r, now, null) ? 'up' : 'lagging',
        // An upper bound now, not as of the last probe: the state above and this figure always agree.
        lagMs: r.up && Number.isFinite(r.freshAsOf) ? Math.ceil(now - r.freshAsOf) : null,
        lagBytes: r.lagBytes,
        replayPaused: r.replayPaused,
        reads: r.reads,
      }));
    },

    pools: () => Object.fromEntries(replicas.map((r): [string, PoolStats] => [`replica:${r.name}`, r.db.stats()])),

    async close() {
      closed = true;
      clearTimeout(timer);
      await Promise.all([
        primary.end({ timeout: 1 }),
        ...replicas.flatMap((r) => [r.db.close(), r.probe.end({ timeout: 1 })]),
      ]);
    },
  };
}
