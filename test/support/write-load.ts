/**
 * A write load for the fault scenarios: clients creating users back to back over real HTTP, every answer kept
 * with its duration, so a test can check afterwards that every acknowledged (201) write is in the database, that
 * no request outlived its deadline, and when writes came back after a fault.
 */
import { randomUUID } from 'node:crypto';
import postgres from 'postgres';

export interface WriteRecord {
  /** HTTP status, or 0 when the connection failed or the client gave up (`giveUpMs`). */
  status: number;
  ms: number;
  /** `performance.now()` when the request was sent. */
  sentAt: number;
  /** The created user's id, for a 201. */
  id?: string;
  /** The `X-Request-Timeout` the request carried, in seconds, if any. */
  timeoutS?: number;
  /** The first 200 characters of a non-201 body, or the network error. */
  detail?: string;
}

export interface WriteLoadOptions {
  /** Clients writing at once. Default 4. */
  concurrency?: number;
  /**
   * `X-Request-Timeout` of each client in turn (seconds, `undefined`: none, the server's default deadline).
   * Default: every client sends 2.
   */
  timeouts?: (number | undefined)[];
  /** How long a client waits for an answer before giving up (status 0). Default 30 s. */
  giveUpMs?: number;
  /** Pause after a refusal, so a client does not spin on a server that refuses at once. Default 20 ms. */
  pauseMs?: number;
}

export interface WriteLoad {
  /** Every answer so far, in the order they arrived. */
  readonly records: WriteRecord[];
  /** Ids of the writes answered 201 so far. */
  acknowledged(): string[];
  /** Resolves once the next 201 after now arrives, with the time it took, or undefined after `limitMs`. */
  nextSuccess(limitMs: number): Promise<number | undefined>;
  /** Stops the clients and resolves with every answer once the requests in flight have settled. */
  stop(): Promise<WriteRecord[]>;
}

export function writeLoad(baseUrl: string, opts: WriteLoadOptions = {}): WriteLoad {
  const { concurrency = 4, timeouts = [2], giveUpMs = 30_000, pauseMs = 20 } = opts;
  const records: WriteRecord[] = [];
  let running = true;
  const one = async (timeoutS: number | undefined): Promise<WriteRecord> => {
    const sentAt = performance.now();
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (timeoutS !== undefined) headers['x-request-timeout'] = String(timeoutS);
    const body = JSON.stringify({ name: 'Load', email: `load.${randomUUID()}@example.com`, age: 30 });
    try {
      const res = await fetch(`${baseUrl}/users`, { method: 'POST', headers, body, signal: AbortSignal.timeout(giveUpMs) });
      const text = await res.text();
      const ms = performance.now() - sentAt;
      if (res.status === 201) return { status: 201, ms, sentAt, timeoutS, id: (JSON.parse(text) as { id: string }).id };
      return { status: res.status, ms, sentAt, timeoutS, detail: text.slice(0, 200) };
    } catch (err) {
      return { status: 0, ms: performance.now() - sentAt, sentAt, timeoutS, detail: String((err as Error).cause ?? err) };
    }
  };
  const client = async (i: number) => {
    const timeoutS = timeouts[i % timeouts.length];
    while (running) {
      const r = await one(timeoutS);
      records.push(r);
      if (r.status !== 201) await new Promise((res) => setTimeout(res, pauseMs));
    }
  };
  const clients = Array.from({ length: concurrency }, (_, i) => client(i));
  return {
    records,
    acknowledged: () => records.flatMap((r) => (r.id ? [r.id] : [])),
    async nextSuccess(limitMs) {
      const from = performance.now();
      while (performance.now() - from < limitMs) {
        if (records.some((r) => r.status === 201 && r.sentAt >= from)) return performance.now() - from;
        await new Promise((res) => setTimeout(res, 20));
      }
      return undefined;
    },
    async stop() {
      running = false;
      await Promise.all(clients);
      return records;
    },
  };
}

/** Of `ids`, those not in the users table (checked by id, in chunks, straight from PostgreSQL). */
export async function missingUsers(databaseUrl: string, ids: string[]): Promise<string[]> {
  const sql = postgres(databaseUrl, { max: 1, onnotice: () => {} });
  try {
    const found = new Set<string>();
    for (let i = 0; i < ids.length; i += 5000) {
      const chunk = ids.slice(i, i + 5000);
      const rows = await sql<{ id: string }[]>`SELECT id::text AS id FROM users WHERE id = ANY(${`{${chunk.join(',')}}`}::uuid[])`;
      for (const r of rows) found.add(r.id);
    }
    return ids.filter((id) => !found.has(id));
  } finally {
    await sql.end();
  }
}

/** Counts of `records` by status, as `{"201": n, ...}`. */
export function byStatus(records: WriteRecord[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const r of records) counts[r.status] = (counts[r.status] ?? 0) + 1;
  return counts;
}

/**
 * Liveness probes every `everyMs` until stopped: each `GET /health/live` must answer 200 within `limitMs`.
 * `stop()` resolves with the durations of the answered ones and the failures (status 0: no answer in time).
 */
export function probeLiveness(baseUrl: string, everyMs = 200, limitMs = 1000): { stop(): Promise<{ ok: number[]; failed: string[] }> } {
  const ok: number[] = [];
  const failed: string[] = [];
  let running = true;
  const loop = (async () => {
    while (running) {
      const t0 = performance.now();
      try {
        const res = await fetch(`${baseUrl}/health/live`, { signal: AbortSignal.timeout(limitMs) });
        await res.text();
        if (res.status === 200) ok.push(performance.now() - t0);
        else failed.push(`${res.status}`);
      } catch (err) {
        failed.push(`no answer within ${limitMs} ms: ${String((err as Error).name)}`);
      }
      await new Promise((res) => setTimeout(res, everyMs));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return { ok, failed };
    },
  };
}
