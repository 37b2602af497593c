/**
 * The tus checksum extension (https://tus.io/protocols/resumable-upload#checksum), which @tus/server lacks.
 *
 * A request with `Upload-Checksum: <algorithm> <base64 digest>` has its body written to a staging file while it
 * is hashed; only when the digest matches are the staged bytes appended to the upload. A mismatch (or a body cut
 * short, which cannot match) answers 460 and the upload is exactly as it was: a crash at any point leaves at
 * most a staging file, never unverified bytes in the upload. Requests without the header take the direct path.
 *
 * The expected digest reaches the store through AsyncLocalStorage: @tus/server calls `DataStore.write` with
 * the body alone, and the route runs the tus handler inside `withRequest` (src/modules/uploads/routes.ts).
 *
 * Both paths append to the upload through the store's own `append`, FileStore's write with a larger buffer, and
 * report the body's bytes so that its buffers are collected young (src/platform/lib/young-buffers.ts).
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { FileStore } from '@tus/file-store';
import { ERRORS } from '@tus/server';
import { errors, type AppError } from '../../platform/errors.ts';
import { noteBodyBytes } from '../../platform/lib/young-buffers.ts';

/** Advertised in `Tus-Checksum-Algorithm`, in order of preference; the digest lengths check the header. */
const DIGEST_BYTES = { sha256: 32, sha1: 20 } as const;
export type ChecksumAlgorithm = keyof typeof DIGEST_BYTES;
export const CHECKSUM_ALGORITHMS = Object.keys(DIGEST_BYTES) as ChecksumAlgorithm[];

export interface Checksum {
  algorithm: ChecksumAlgorithm;
  digest: Buffer;
}

/**
 * Read size of the staged body's copy into the upload: 1 MiB reads instead of the default 64 KiB make a sixteenth of
 * the chunks and buffers (sha256 PATCHes of 1 GB: 155, 186, 127 MB/s against 115, 138, 130; docs/uploads.md).
 */
const STAGED_READ_BYTES = 1024 * 1024;

/**
 * How much of a body the upload's file stream holds while a write is in flight: the chunks that arrive meanwhile
 * leave together in one `writev`. @tus/file-store's stream holds 16 KiB, so every 64 KiB chunk of the socket was a
 * write of its own, each a round trip through libuv's thread pool (15,262 `pwrite64` for 1 GB). Per PATCH in flight,
 * so memory stays bounded. 1 GB by tus-js-client, three in a row after a `sync`: 325, 216 and 189 MB/s before,
 * 360, 336 and 250 after (docs/uploads.md).
 */
const FILE_WRITE_BUFFER = 4 * 1024 * 1024;

const HEADER = /^([A-Za-z0-9-]+) ([A-Za-z0-9+/]+={0,2})$/;

/**
 * The checksum an `Upload-Checksum` header asks for, undefined without one; `bad_input` (400, as the extension
 * says) for an algorithm not supported or a digest that is not the algorithm's length in base64.
 */
export function parseChecksum(header: string | string[] | undefined): Checksum | undefined {
  if (header === undefined) return undefined;
  const m = typeof header === 'string' ? HEADER.exec(header.trim()) : null;
  if (!m) throw errors.uploadRefused('Invalid Upload-Checksum header: expected "<algorithm> <base64 digest>"');
  const algorithm = m[1]!.toLowerCase();
  if (!(algorithm in DIGEST_BYTES)) {
    throw errors.uploadRefused(`Unsupported checksum algorithm; supported: ${CHECKSUM_ALGORITHMS.join(', ')}`);
  }
  const digest = Buffer.from(m[2]!, 'base64');
  if (digest.length !== DIGEST_BYTES[algorithm as ChecksumAlgorithm]) {
    throw errors.uploadRefused(`Invalid Upload-Checksum header: not a ${algorithm} digest`);
  }
  return { algorithm: algorithm as ChecksumAlgorithm, digest };
}

/** What the route knows about the request that the store and the tus hooks need. */
export interface RequestFacts {
  /** The caller's account id, null for an anonymous caller. */
  owner: string | null;
  checksum: Checksum | undefined;
  /** A catalogue error thrown inside the tus handler, kept for the route to answer with (tus would make it a 500). */
  error?: AppError;
}

const facts = new AsyncLocalStorage<RequestFacts>();
/** Requests inside `withRequest` now. */
let inside = 0;

/**
 * Runs `fn` (the tus handler) with the request's facts in reach of the store and the hooks.
 *
 * On Node 20 the first `run` of an AsyncLocalStorage turns on a promise hook for the whole process, and it stays
 * on until `disable()`: after one upload, every request of the users API paid for it (cache hits: 67 to 70 µs of
 * CPU a request before, 78 to 79 after; docs/uploads.md). So the storage is disabled whenever no request is
 * inside; nothing reads the facts after the tus handler has answered. (Node 24's storage needs no hook.)
 */
export async function withRequest<T>(f: RequestFacts, fn: () => Promise<T>): Promise<T> {
  inside++;
  try {
    return await facts.run(f, fn);
  } finally {
    if (--inside === 0) facts.disable();
  }
}

/** The facts of the request being handled; throws outside `withRequest` (a bug). */
export function requestFacts(): RequestFacts {
  const f = facts.getStore();
  if (!f) throw new Error('tus handler called outside withRequest');
  return f;
}

/**
 * @tus/file-store with the checksum extension, and without creation-defer-length: every upload declares its
 * length at creation, so UPLOAD_MAX_BYTES is enforced (413) before anything is stored.
 */
export class ChecksumFileStore extends FileStore {
  private readonly staging: string;

  constructor(opts: { directory: string; expirationPeriodInMilliseconds: number }) {
    super(opts);
    this.extensions = ['creation', 'creation-with-upload', 'termination', 'expiration', 'checksum'];
    this.staging = join(opts.directory, '.staging');
  }

  override async write(readable: Readable, id: string, offset: number): Promise<number> {
    const checksum = facts.getStore()?.checksum;
    if (!checksum) return this.append(readable, id, offset);
    await mkdir(this.staging, { recursive: true });
    const staged = join(this.staging, `${id}.${randomUUID()}`);
    try {
      const hash = createHash(checksum.algorithm);
      const hashing = new Transform({
        transform(chunk: Buffer, _enc, done) {
          hash.update(chunk);
          noteBodyBytes(chunk.length);
          done(null, chunk);
        },
      });
      await pipeline(readable, hashing, createWriteStream(staged));
      if (!timingSafeEqual(hash.digest(), checksum.digest)) throw errors.checksumMismatch();
      return await this.append(createReadStream(staged, { highWaterMark: STAGED_READ_BYTES }), id, offset);
    } finally {
      await rm(staged, { force: true });
    }
  }

  /**
   * `FileStore.write` with a larger buffer (FILE_WRITE_BUFFER): `readable`'s bytes at `offset` of the upload's
   * file, resolving with the offset after them. A body that ends early (a client that left) still has what it sent
   * written and counted, so the upload resumes from there.
   */
  private async append(readable: Readable, id: string, offset: number): Promise<number> {
    let received = 0;
    const counted = new Transform({
      transform(chunk: Buffer, _enc, done) {
        received += chunk.length;
        noteBodyBytes(chunk.length);
        done(null, chunk);
      },
    });
    // As FileStore's own path check: an id is a file name in the directory, never a path out of it.
    if (basename(id) !== id) throw ERRORS.FILE_NOT_FOUND;
    const file = createWriteStream(join(this.directory, id), { flags: 'r+', start: offset, highWaterMark: FILE_WRITE_BUFFER });
    try {
      await pipeline(readable, counted, file);
    } catch {
      throw ERRORS.FILE_WRITE_ERROR;
    }
    return offset + received;
  }
}
