/**
 * The `bulk.cleanup` job, on a cron schedule: deletes exports past their expiry (read from their names), and
 * leftovers: export `.part` files and spooled import bodies older than `leftoverMs` (their job was cancelled
 * before it ran, or died for good), and the refusal markers of import jobs.
 */
import { readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Schedule } from '../../platform/jobs/cron.ts';
import type { JobDefinition } from '../../platform/jobs/runner.ts';
import { parseExportName } from './signed-url.ts';

export const CLEANUP_KIND = 'bulk.cleanup';
export const CLEANUP_SCHEDULE: Schedule = { name: 'bulk.cleanup', cron: '*/5 * * * *', job: { kind: CLEANUP_KIND, maxAttempts: 3 } };

export interface CleanupOptions {
  exportsDir: string;
  spoolDir: string;
  leftoverMs: number;
}

const names = (dir: string) => readdir(dir).catch(() => [] as string[]);

/** Deletes what has expired; returns what went, by kind. */
export async function cleanUp(o: CleanupOptions, now = Date.now()): Promise<{ exports: number; leftovers: number }> {
  let exports = 0;
  let leftovers = 0;
  const old = async (path: string) => (await stat(path).catch(() => undefined))?.mtimeMs ?? now;
  for (const name of await names(o.exportsDir)) {
    const parsed = parseExportName(name);
    const path = join(o.exportsDir, name);
    if (parsed ? parsed.expiresS * 1000 <= now : name.endsWith('.part') && now - (await old(path)) > o.leftoverMs) {
      await rm(path, { force: true });
      if (parsed) exports++;
      else leftovers++;
    }
  }
  for (const name of await names(o.spoolDir)) {
    const path = join(o.spoolDir, name);
    if (now - (await old(path)) > o.leftoverMs) {
      await rm(path, { force: true });
      leftovers++;
    }
  }
  return { exports, leftovers };
}

export const cleanupJob = (o: CleanupOptions): JobDefinition => ({ kind: CLEANUP_KIND, run: () => cleanUp(o) });
