/**
 * The `bulk.import` job: reads an import file (a spooled request body or a finished upload), checks every row by
 * the rules of `POST /users` (rows.ts), and writes the valid ones through the backend's `BulkStore`.
 *
 * - all_or_nothing (the default): one refused row and nothing is written; the job fails, its error listing the
 *   refused rows. On an atomic store (PostgreSQL) that is one pass: the rows stream into the transaction and a
 *   refusal at the end rolls it back. Otherwise (Cassandra) a first pass checks the file and a second writes it.
 * - skip_invalid: the valid rows are written, the refused ones listed in the result.
 *
 * A refusal is final, but the queue retries every failed attempt: the refusal is written beside the spool
 * (`<job id>.refused`), and a later attempt repeats it at once instead of reading the file again.
 */
import { createReadStream } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { BulkStore, ImportRow } from '../../db/bulk-store.ts';
import { errors, isAppError } from '../../platform/errors.ts';
import type { JobContext, JobDefinition } from '../../platform/jobs/runner.ts';
import { finishedUpload } from '../uploads/files.ts';
import { readRecords, type ImportFormat } from './records.ts';
import { ImportReport, validRows, type RowError } from './rows.ts';

export const IMPORT_KIND = 'bulk.import';
export type ImportMode = 'all_or_nothing' | 'skip_invalid';

export interface ImportPayload {
  format: ImportFormat;
  mode: ImportMode;
  /** The spooled body's file name in the spool directory, or the id of a finished upload. */
  spool?: string;
  upload?: string;
}

export interface ImportResult {
  imported: number;
  rejected: number;
  errors: RowError[];
}

export interface ImportJobOptions {
  store: () => BulkStore;
  spoolDir: string;
  uploadsDir: string;
  maxErrors: number;
}

/**
 * Bytes read at a time: each chunk's rows are checked and encoded in one go on the event loop, so a chunk is
 * kept to some thousands of rows (~10 ms of work) and requests served beside an import wait no longer than that.
 */
const READ_CHUNK = 128 * 1024;
/** How often progress is written while rows stream in. */
const PROGRESS_EVERY_MS = 250;
/** The job error holds at most this many characters of refused rows (the queue keeps 2,000). */
const ERROR_TEXT_MAX = 1800;

/** The refusal of a whole file: how many rows, and as many of their errors as fit, as JSON. */
function refusal(report: ImportReport): string {
  const head = `Import refused, nothing was written: ${report.rejected} of ${report.read} rows are invalid. Errors: `;
  const shown: RowError[] = [];
  let text = '[]';
  for (const e of report.errors) {
    const next = JSON.stringify([...shown, e]);
    if (head.length + next.length > ERROR_TEXT_MAX) break;
    shown.push(e);
    text = next;
  }
  return head + text;
}

export function importJob(o: ImportJobOptions): JobDefinition {
  async function source(p: ImportPayload, owner: string | null): Promise<string> {
    if (p.spool !== undefined) return join(o.spoolDir, p.spool);
    const found = await finishedUpload(o.uploadsDir, p.upload ?? '', owner);
    if (!found) throw errors.importRefused('The upload is gone or not finished. Nothing was imported.');
    return found.path;
  }

  async function run(payload: unknown, ctx: JobContext): Promise<ImportResult> {
    const p = payload as ImportPayload;
    const marker = join(o.spoolDir, `${ctx.job.id}.refused`);
    const earlier = await readFile(marker, 'utf8').catch(() => undefined);
    if (earlier !== undefined) throw errors.importRefused(earlier);
    const path = await source(p, ctx.job.owner);
    const store = o.store();
    const key = { jobId: ctx.job.id, createdAt: new Date(ctx.job.createdAt) };

    let report = new ImportReport(o.maxErrors);
    /** Rows handed to the store so far (on PostgreSQL: copied into the import's transaction, not yet committed). */
    let written = 0;
    const detail = () => ({ read: report.read, written, rejected: report.rejected });
    let last = performance.now();
    const progress = async () => {
      if (performance.now() - last < PROGRESS_EVERY_MS) return;
      last = performance.now();
      await ctx.progress(report.read, null, detail());
    };
    const rows = (r: ImportReport) => validRows(p.format, readRecords(p.format, createReadStream(path, { highWaterMark: READ_CHUNK })), r, progress);
    const allOrNothing = p.mode === 'all_or_nothing';

    try {
      if (allOrNothing && !store.atomic) {
        // Check the whole file before the first write.
        for await (const _ of rows(report)) { /* counting only */ }
        if (report.rejected > 0) throw errors.importRefused(refusal(report));
        report = new ImportReport(o.maxErrors);
      }
      const checkedRows = async function* (): AsyncGenerator<ImportRow[]> {
        // After a refusal in all_or_nothing nothing more is written (it would be rolled back); reading goes on
        // for the report.
        for await (const batch of rows(report)) {
          if (allOrNothing && report.rejected > 0) continue;
          yield batch;
          written += batch.length;
        }
        // Thrown inside the store's import, so an atomic store rolls back everything it copied.
        if (allOrNothing && report.rejected > 0) throw errors.importRefused(refusal(report));
      };
      const outcome = await store.importUsers(key, checkedRows(), ctx.signal);
      if (outcome.alreadyDone) {
        // An earlier attempt committed; read the file once more for its report.
        for await (const _ of rows(report)) { /* counting only */ }
      }
      written = outcome.written;
      await ctx.progress(report.read, report.read, detail());
      if (p.spool !== undefined) await rm(path, { force: true }).catch(() => {});
      return { imported: outcome.written, rejected: report.rejected, errors: report.errors };
    } catch (err) {
      if (isAppError(err) && err.code === 'IMPORT_REFUSED') {
        // An import from an upload may be the first to need the directory.
        await mkdir(o.spoolDir, { recursive: true }).then(() => writeFile(marker, err.message)).catch(() => {});
        if (p.spool !== undefined) await rm(path, { force: true }).catch(() => {});
      } else if (ctx.job.attempts >= ctx.job.maxAttempts && p.spool !== undefined) {
        // The last attempt: nothing will read the spool again.
        await rm(path, { force: true }).catch(() => {});
      }
      throw err;
    }
  }

  return { kind: IMPORT_KIND, run, backoff: { baseMs: 500, maxMs: 60_000 } };
}
