/**
 * How the accounts modules (accounts.ts, account-sessions.ts, api-keys.ts) run their statements: the `Exec` they
 * share, the serialized partition keys the session needs to route a request and check its replicas, a bounded
 * fan-out of single-partition requests (the Cassandra way to read many rows: one request per partition, several in
 * flight, never a multi-partition IN), and the check of text values that CQL would store but PostgreSQL refuses.
 */
import type { types } from 'cassandra-driver';
import type { ExecOptions } from './session.ts';

export const uuidKey = (id: string): Buffer => Buffer.from(id.replace(/-/g, ''), 'hex');
export const textKey = (s: string): Buffer => Buffer.from(s, 'utf8');
/** The serialized `int` 0: the single partition of `account_ids` and `refresh_token_expiry_hours`. */
export const SHARD_KEY: Buffer = Buffer.alloc(4);
export const bigintKey = (n: number): Buffer => {
  const b = Buffer.alloc(8);
  b.writeBigInt64BE(BigInt(n));
  return b;
};

/** Requests in flight at once when many partitions are read or written. */
export const FAN_OUT = 32;

/** `fn` over `items`, at most `FAN_OUT` at a time; results in order. */
export async function fanOut<T, R>(items: readonly T[], fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(FAN_OUT, items.length) }, worker));
  return out;
}

/** How the accounts adapter runs statements: on the session, once the schema is ready. */
export interface Exec {
  (cql: string, params: unknown[], o: ExecOptions): Promise<types.ResultSet>;
  batch(queries: { query: string; params: unknown[] }[], o: ExecOptions): Promise<void>;
  /** The serial consistency, for a read after a lost conditional update. */
  readonly serial: ExecOptions['consistency'];
  /** A table name qualified with the keyspace. */
  table(name: string): string;
}

const chars = (s: string) => [...s].length;

/**
 * A string PostgreSQL would store in a `text` column (no NUL), of `min` to `max` characters: the accounts
 * schema's CHECK constraints (0002_auth.sql), which Cassandra does not have, are enforced with it.
 */
export const isText = (s: unknown, min = 0, max = Infinity): s is string =>
  typeof s === 'string' && !s.includes('\0') && chars(s) >= min && chars(s) <= max;
