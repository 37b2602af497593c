/**
 * Health probes on a connection of their own.
 *
 * Probes never queue behind user queries: with every pooled connection busy, or the server hanging, `/health`
 * must still answer within a second. A one-connection client is used for them, and each probe races a timer.
 */
import postgres from 'postgres';
import { withDeadline } from '../../platform/lib/deadline.ts';
import type { CallOptions } from '../users-store.ts';
import { toAppError } from './errors.ts';
import { LATEST_VERSION, schemaVersion } from './migrate.ts';

export interface Health {
  ping(opts?: CallOptions): Promise<void>;
  schemaReady(opts?: CallOptions): Promise<boolean>;
  close(): Promise<void>;
}

/** Probe timeout when the caller gives no deadline. */
const PROBE_TIMEOUT_MS = 900;

export function createHealth(url: string): Health {
  const sql = postgres(url, {
    max: 1,
    connect_timeout: 1,
    idle_timeout: 30,
    backoff: () => 0.05,
    onnotice: () => {},
    connection: { application_name: 'spate-health', statement_timeout: PROBE_TIMEOUT_MS },
  });

  function probe<T>(work: () => Promise<T>, opts?: CallOptions): Promise<T> {
    const ms = opts?.deadline === undefined ? PROBE_TIMEOUT_MS : opts.deadline - performance.now();
    return withDeadline(work(), ms, { mapError: toAppError });
  }

  return {
    ping: (opts) => probe(async () => { await sql`SELECT 1`; }, opts),
    schemaReady: (opts) => probe(async () => (await schemaVersion(sql)) >= LATEST_VERSION, opts),
    close: () => sql.end({ timeout: 1 }),
  };
}
