/**
 * The bulk storage interface: writing an import's users in one go (docs/bulk.md). Exports need nothing new: they
 * read `UsersStore.stream`.
 *
 * An import is a job, and a job runs at least once (docs/jobs.md): a worker that dies after writing rows runs the
 * job again. So the rows of an import have ids derived from the job and the line they came from (`importUserId`),
 * and timestamps from the job's creation: every attempt writes the very same rows, and an adapter either notices
 * they are there (PostgreSQL) or writes them again unchanged (Cassandra). No attempt duplicates or loses a row.
 */
import { createHash } from 'node:crypto';
import type { NewUser } from './users-store.ts';

/** A valid row, already checked and normalised by the caller, with the line of the file it came from. */
export interface ImportRow extends NewUser {
  line: number;
}

/** Which import the rows belong to: the job's id and creation time make the rows' ids and timestamps. */
export interface ImportKey {
  jobId: string;
  createdAt: Date;
}

export interface ImportOutcome {
  /** Rows of this import now stored (written by this attempt, or found written by an earlier one). */
  written: number;
  /** True when an earlier attempt had already committed the import and this one wrote nothing. */
  alreadyDone: boolean;
}

export interface BulkStore {
  /**
   * True when `importUsers` is all or nothing by itself (one transaction): an error thrown by `rows` (or the
   * database) leaves nothing written. False (Cassandra): rows are written as they come, so a caller that wants
   * all or nothing must check every row before it starts.
   */
  readonly atomic: boolean;
  /** Writes the rows, batch by batch as the iterable yields them; an error from it aborts the import. */
  importUsers(key: ImportKey, rows: AsyncIterable<readonly ImportRow[]>, signal?: AbortSignal): Promise<ImportOutcome>;
}

/** Lines of one import are numbered into the last 40 bits of its ids. */
export const MAX_IMPORT_LINE = 2 ** 40 - 1;

/**
 * The first 22 hex digits (and dashes) of every id of this import: a UUIDv7 whose timestamp is the job's creation
 * and whose `rand_a` and top of `rand_b` are 34 bits of a hash of the job id; the line follows in the last 40
 * bits. So one import's ids are one contiguous range of the key space, in line order (B-tree inserts stay on the
 * right-most page, as for new users), and two imports' ids collide only if they were created in the same
 * millisecond and their job ids' hashes agree on 34 bits.
 */
export function importIdPrefix(key: ImportKey): string {
  const b = Buffer.alloc(11);
  b.writeUIntBE(key.createdAt.getTime(), 0, 6);
  const h = createHash('sha256').update(key.jobId).digest();
  b[6] = 0x70 | (h[0]! & 0x0f);
  b[7] = h[1]!;
  b[8] = 0x80 | (h[2]! & 0x3f);
  b[9] = h[3]!;
  b[10] = h[4]!;
  const x = b.toString('hex');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

/** The id of the user from `line` of the import whose prefix is `prefix`. */
export const importUserId = (prefix: string, line: number): string => prefix + line.toString(16).padStart(10, '0');

/** The lowest and highest id an import can have. */
export const importIdRange = (prefix: string): [string, string] => [importUserId(prefix, 0), importUserId(prefix, MAX_IMPORT_LINE)];
