/**
 * The uploads directory as other modules see it: where it is, and the one way to get a finished upload's file.
 *
 * Each upload is two files named after its id (a UUID): `<id>`, the bytes received so far, and `<id>.json`, what
 * @tus/file-store records at creation (declared size, metadata, creation date). The owner is kept in the metadata
 * under OWNER_KEY, set by the server at creation and never by the client (src/modules/uploads/routes.ts).
 * Bulk import reads a finished upload through `finishedUpload` and nothing else.
 */
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Config } from '../../platform/config.ts';
import { parseUuid } from '../../platform/lib/uuid.ts';

/** The metadata key of the owning account; absent for an upload made anonymously (AUTH_MODE=off). */
export const OWNER_KEY = 'spate-owner';

/** What @tus/file-store writes to `<id>.json` (the fields we read). */
export interface UploadInfo {
  id: string;
  size?: number;
  metadata?: Record<string, string | null>;
  creation_date?: string;
}

/** The directory holding every upload (`UPLOADS_DIR`, else `DATA_DIR`/uploads). */
export function uploadsDir(config: Pick<Config, 'uploads'>): string {
  return config.uploads.dir;
}

/** The owner recorded for an upload: an account id, or null for an anonymous one. */
export const ownerOf = (info: UploadInfo): string | null => info.metadata?.[OWNER_KEY] ?? null;

/** The info of upload `id` (already canonical), or null when there is none (or it cannot be read). */
export async function readInfo(dir: string, id: string): Promise<UploadInfo | null> {
  try {
    const info = JSON.parse(await readFile(join(dir, `${id}.json`), 'utf8')) as UploadInfo;
    return typeof info === 'object' && info !== null ? info : null;
  } catch {
    return null;
  }
}

/**
 * The file of a finished upload of `owner` (null: an anonymous caller's), or null when `id` is not an upload id,
 * the upload is missing, still receiving bytes, or another account's. Nothing tells those cases apart, so a
 * caller cannot probe for other accounts' uploads.
 */
export async function finishedUpload(
  dir: string,
  id: string,
  owner: string | null,
): Promise<{ path: string; size: number } | null> {
  const canonical = parseUuid(id);
  if (canonical === null) return null;
  const info = await readInfo(dir, canonical);
  if (info === null || ownerOf(info) !== owner || typeof info.size !== 'number') return null;
  const path = join(dir, canonical);
  try {
    const st = await stat(path);
    return st.isFile() && st.size === info.size ? { path, size: st.size } : null;
  } catch {
    return null;
  }
}
