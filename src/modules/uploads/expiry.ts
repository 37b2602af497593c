/**
 * The sweep that deletes unfinished uploads past their expiry (tus expiration extension).
 *
 * Our own rather than @tus/file-store's `deleteExpired`: that one compares the declared size with the offset
 * recorded at creation (always 0), so it would delete finished uploads too once they are old enough, and bulk
 * import reads finished uploads (src/modules/uploads/files.ts). Here the offset is the file's size on disk.
 *
 * With a job queue it is a cron job (one instance per run); without one (Cassandra) every instance runs it on an
 * interval, and runs that overlap are harmless (each deletes what is still there), as the auth pruning does.
 */
import { readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Schedule } from '../../platform/jobs/cron.ts';
import type { JobDefinition } from '../../platform/jobs/runner.ts';
import { parseUuid } from '../../platform/lib/uuid.ts';
import { readInfo } from './files.ts';

export const EXPIRE_KIND = 'uploads.expire';

/** Every five minutes: an expired upload is already refused (410) by the protocol; this only frees its disk. */
export const EXPIRE_SCHEDULE: Schedule = { name: 'uploads.expire', cron: '*/5 * * * *', job: { kind: EXPIRE_KIND, maxAttempts: 3 } };
export const EXPIRE_EVERY_MS = 5 * 60_000;

/** Size on disk, or -1 when the file is gone. */
async function sizeOf(path: string): Promise<number> {
  try {
    return (await stat(path)).size;
  } catch {
    return -1;
  }
}

/** Deletes every unfinished upload of `dir` created more than `expiryMs` before `now`; resolves with the count. */
export async function sweepExpired(dir: string, expiryMs: number, now = Date.now()): Promise<{ deleted: number }> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return { deleted: 0 }; // no upload was ever made
  }
  let deleted = 0;
  for (const name of names) {
    const id = name.endsWith('.json') ? parseUuid(name.slice(0, -5)) : null;
    if (id === null) continue;
    const info = await readInfo(dir, id);
    const created = info?.creation_date ? Date.parse(info.creation_date) : NaN;
    if (!info || !(now > created + expiryMs)) continue;
    if (typeof info.size === 'number' && (await sizeOf(join(dir, id))) === info.size) continue; // finished: kept
    await rm(join(dir, id), { force: true });
    await rm(join(dir, name), { force: true });
    deleted += 1;
  }
  return { deleted };
}

/** The sweep as a job kind; its result is how many uploads it deleted. */
export function expireJob(dir: string, expiryMs: number): JobDefinition {
  return { kind: EXPIRE_KIND, run: () => sweepExpired(dir, expiryMs) };
}
