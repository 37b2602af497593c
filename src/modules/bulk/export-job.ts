/**
 * The `bulk.export` job: every user, in primary-key order, through the same encoders as `GET /users/stream`
 * (src/modules/users/stream-encoders.ts: the CSV is that endpoint's RFC 4180), into a file of the exports
 * directory. Memory stays flat: one page of users is read, encoded and written at a time, with the file's
 * backpressure. The file is written under a temporary name and renamed when complete, so a download never sees
 * half a file, and an attempt that dies leaves only a `.part` that the next attempt overwrites.
 */
import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { mkdir, rename } from 'node:fs/promises';
import { join } from 'node:path';
import type { UsersStore } from '../../db/users-store.ts';
import type { JobContext, JobDefinition } from '../../platform/jobs/runner.ts';
import { errors } from '../../platform/errors.ts';
import { createEncoder } from '../users/stream-encoders.ts';
import { exportName, type ExportFormat, type Signer } from './signed-url.ts';

export const EXPORT_KIND = 'bulk.export';

export interface ExportPayload {
  format: ExportFormat;
  /**
   * The `X-Consistency-Token` the export was started with (docs/operations.md, "Read replicas"): the export then
   * reads where that write is visible, as a stream with it would. Absent without replicas or without a token.
   */
  after?: string;
}

export interface ExportResult {
  rows: number;
  bytes: number;
  download_url: string;
  expires_at: string;
}

export interface ExportJobOptions {
  users: () => UsersStore;
  dir: string;
  ttlS: number;
  signer: Signer;
}

/** Rows per database round trip: round trips, not rows, set the pace of a cursor on a busy database. */
const FETCH_SIZE = 5000;
const PROGRESS_EVERY_MS = 250;

export function exportJob(o: ExportJobOptions): JobDefinition {
  async function run(payload: unknown, ctx: JobContext): Promise<ExportResult> {
    const { format, after } = payload as ExportPayload;
    // Checked when the export was asked for (routes.ts); one still refused here fails the job for good (bad_input).
    const readYourWrites = after === undefined ? undefined : { after, token: undefined };
    await mkdir(o.dir, { recursive: true });
    const part = join(o.dir, `${ctx.job.id}.${format}.part`);
    const out = createWriteStream(part);
    const failed = once(out, 'error').then(([err]) => { throw err; });
    failed.catch(() => {});
    const write = async (s: string) => {
      if (s.length > 0 && !out.write(s)) await Promise.race([once(out, 'drain'), failed]);
    };
    const encoder = createEncoder(format);
    let rows = 0;
    let pages = 0;
    let last = performance.now();
    try {
      await write(encoder.head());
      for await (const page of o.users().stream({ limit: Number.MAX_SAFE_INTEGER, fetchSize: FETCH_SIZE, signal: ctx.signal, bulk: true, readYourWrites })) {
        if (ctx.signal.aborted) throw errors.unavailable('export stopped');
        rows += page.length;
        pages += 1;
        await write(encoder.page(page));
        if (performance.now() - last >= PROGRESS_EVERY_MS) {
          last = performance.now();
          await ctx.progress(rows, null);
        }
      }
      await write(encoder.tail({ rows, pages, fetchSize: FETCH_SIZE }));
      out.end();
      await Promise.race([once(out, 'finish'), failed]);
    } catch (err) {
      out.destroy();
      throw err;
    }
    const expiresS = Math.floor(Date.now() / 1000) + o.ttlS;
    const name = exportName(ctx.job.id, expiresS, format);
    await rename(part, join(o.dir, name));
    await ctx.progress(rows, rows);
    return {
      rows,
      bytes: out.bytesWritten,
      download_url: `/exports/${name}?signature=${o.signer.sign(name)}`,
      expires_at: new Date(expiresS * 1000).toISOString(),
    };
  }
  return { kind: EXPORT_KIND, run };
}
