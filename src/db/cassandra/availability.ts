/**
 * Fail fast when too few replicas are up: the driver's view of the ring, checked before and during a request.
 *
 * A Cassandra coordinator answers `Unavailable` only once its failure detector has convicted the dead replicas,
 * which takes seconds (about 12 s on 2.1 at the lowest `phi_convict_threshold`). Until then it sends to them and
 * answers with a timeout after 2 s (writes) or 5 s (reads). The driver usually knows much sooner: a crashed node
 * closes its connections, and the driver marks it down at once. So before a request is sent, and again whenever a
 * host goes down while it runs, the replicas of the request's partition (or of every token range, for a scan) are
 * counted against its consistency level, and the request is answered 503 when it cannot succeed.
 *
 * What this cannot see: a node that hangs with its sockets open (a long GC pause, SIGSTOP, a silent network
 * partition) stays up for the driver until its heartbeat fails; those requests end in a timeout (504) instead.
 * And the check trusts the driver: a node the driver cannot reach but its peers can is counted as down.
 */
import type { Client } from 'cassandra-driver';
import { errors } from '../../platform/errors.ts';

/** Consistency levels by name, as in configuration. */
export type Level =
  | 'ANY' | 'ONE' | 'TWO' | 'THREE' | 'QUORUM' | 'ALL' | 'LOCAL_QUORUM' | 'EACH_QUORUM' | 'LOCAL_ONE'
  | 'SERIAL' | 'LOCAL_SERIAL';

/** The part of a driver `Host` this module reads. */
interface HostLike {
  datacenter: string;
  isUp(): boolean;
}

/** Whether `replicas` (of one token range) with their current up/down state can satisfy `level`. */
export function satisfies(level: Level, replicas: readonly HostLike[], localDc: string): boolean {
  const up = (hs: readonly HostLike[]) => hs.reduce((n, h) => n + (h.isUp() ? 1 : 0), 0);
  const quorum = (hs: readonly HostLike[]) => up(hs) >= Math.floor(hs.length / 2) + 1;
  const local = () => replicas.filter((h) => h.datacenter === localDc);
  switch (level) {
    case 'ANY': return true; // the coordinator stores a hint when no replica is up
    case 'ONE': return up(replicas) >= 1;
    case 'TWO': return up(replicas) >= 2;
    case 'THREE': return up(replicas) >= 3;
    case 'LOCAL_ONE': return up(local()) >= 1;
    case 'QUORUM': case 'SERIAL': return quorum(replicas);
    case 'LOCAL_QUORUM': case 'LOCAL_SERIAL': return quorum(local());
    case 'ALL': return up(replicas) === replicas.length;
    case 'EACH_QUORUM': {
      const dcs = new Set(replicas.map((h) => h.datacenter));
      return [...dcs].every((dc) => quorum(replicas.filter((h) => h.datacenter === dc)));
    }
  }
}

export interface Availability {
  /** Throws `unavailable` when a request on `keys` (a scan when undefined) cannot meet every level in `levels`. */
  check(keys: readonly Buffer[] | undefined, levels: readonly Level[]): void;
  /**
   * Settles with `work`, unless a host goes down while it runs and the request can no longer meet its levels:
   * then it rejects with `unavailable` at once (the work itself is abandoned, not undone).
   */
  guard<T>(work: Promise<T>, keys: readonly Buffer[] | undefined, levels: readonly Level[]): Promise<T>;
  close(): void;
}

interface Watcher {
  keys: readonly Buffer[] | undefined;
  levels: readonly Level[];
  fail: () => void;
}

export function createAvailability(client: Client, keyspace: string, localDc: string, enabled: boolean): Availability {
  const watchers = new Set<Watcher>();
  /** Scan verdicts per set of levels, dropped whenever a host changes state. */
  const scans = new Map<string, boolean>();

  /** The replica sets to check: one per key, or one per token range. Null when the driver has no ring yet. */
  function replicaSets(keys: readonly Buffer[] | undefined): HostLike[][] | null {
    // The driver takes a serialized partition key or a token range (it replicates the range's end token).
    const targets: readonly unknown[] = keys ?? [...((client.metadata.getTokenRanges() as Set<unknown> | undefined) ?? [])];
    if (targets.length === 0) return null;
    const sets: HostLike[][] = [];
    for (const target of targets) {
      const replicas = client.getReplicas(keyspace, target as Buffer) as HostLike[] | null | undefined;
      if (!replicas?.length) return null;
      sets.push(replicas);
    }
    return sets;
  }

  function ok(keys: readonly Buffer[] | undefined, levels: readonly Level[]): boolean {
    if (!enabled || levels.length === 0) return true;
    const cacheKey = keys === undefined ? levels.join(',') : undefined;
    if (cacheKey !== undefined) {
      const known = scans.get(cacheKey);
      if (known !== undefined) return known;
    }
    const sets = replicaSets(keys);
    // Without a ring (not connected yet, keyspace metadata not loaded) the server decides.
    const verdict = sets === null || sets.every((replicas) => levels.every((l) => satisfies(l, replicas, localDc)));
    if (cacheKey !== undefined && sets !== null) scans.set(cacheKey, verdict);
    return verdict;
  }

  const onChange = () => scans.clear();
  const onDown = () => {
    scans.clear();
    for (const w of watchers) if (!ok(w.keys, w.levels)) w.fail();
  };
  client.on('hostUp', onChange);
  client.on('hostAdd', onChange);
  client.on('hostRemove', onDown);
  client.on('hostDown', onDown);

  const lost = () => errors.unavailable('not enough Cassandra replicas up');

  return {
    check(keys, levels) {
      if (!ok(keys, levels)) throw lost();
    },
    guard(work, keys, levels) {
      if (!enabled || levels.length === 0) return work;
      return new Promise((resolve, reject) => {
        const watcher: Watcher = { keys, levels, fail: () => { watchers.delete(watcher); reject(lost()); } };
        watchers.add(watcher);
        work.then(
          (v) => { watchers.delete(watcher); resolve(v); },
          (err) => { watchers.delete(watcher); reject(err); },
        );
      });
    },
    close() {
      client.off('hostUp', onChange);
      client.off('hostAdd', onChange);
      client.off('hostRemove', onDown);
      client.off('hostDown', onDown);
      for (const w of watchers) w.fail();
    },
  };
}
