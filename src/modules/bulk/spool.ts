/**
 * Spooling an import's request body to a file, so the job can read it after the `202`, in any worker sharing the
 * directory. The body is streamed (never held in memory), counted against IMPORT_MAX_BYTES, flushed to disk and
 * only then renamed into place: a spool file that exists is complete.
 */
import { randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, open, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { errors } from '../../platform/errors.ts';

/** Writes `body` to a new file of `dir`; returns its name. Over `maxBytes`: `payloadTooLarge`, nothing kept. */
export async function spoolBody(body: Readable, dir: string, maxBytes: number): Promise<string> {
  await mkdir(dir, { recursive: true });
  const name = `${randomUUID()}.body`;
  const part = join(dir, `${name}.part`);
  let size = 0;
  const bounded = new Transform({
    transform(chunk: Buffer, _, done) {
      size += chunk.length;
      done(size > maxBytes ? errors.payloadTooLarge() : null, chunk);
    },
  });
  try {
    await pipeline(body, bounded, createWriteStream(part));
    const fd = await open(part, 'r');
    try { await fd.datasync(); } finally { await fd.close(); }
    await rename(part, join(dir, name));
    return name;
  } catch (err) {
    await rm(part, { force: true });
    throw err;
  }
}
