/**
 * Download URLs of exports: `/exports/<job id>-<expiry>.<ext>?signature=<HMAC>`. The expiry (Unix seconds) is in
 * the file's name, so the signature (HMAC-SHA256 of the name, base64url, with EXPORT_SIGNING_SECRET) covers it:
 * a URL cannot be stretched, and the cleanup job reads a file's expiry from its name alone.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

export type ExportFormat = 'csv' | 'ndjson' | 'json';
export const EXPORT_FORMATS: readonly ExportFormat[] = ['csv', 'ndjson', 'json'];

/** An export's file name: `<uuid>-<expires>.<ext>`. */
export const EXPORT_NAME = /^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})-(\d{1,12})\.(csv|ndjson|json)$/;

export const exportName = (jobId: string, expiresS: number, format: ExportFormat) => `${jobId}-${expiresS}.${format}`;

/** The expiry (Unix seconds) and format of an export's file name, or undefined when it is not one. */
export function parseExportName(name: string): { expiresS: number; format: ExportFormat } | undefined {
  const m = EXPORT_NAME.exec(name);
  return m ? { expiresS: Number(m[2]), format: m[3] as ExportFormat } : undefined;
}

export interface Signer {
  sign(name: string): string;
  verify(name: string, signature: string | undefined): boolean;
}

/**
 * Signs with `secret` (EXPORT_SIGNING_SECRET); without it, with a key derived from `fallback` (JWT_SECRET, which
 * every instance of a deployment shares: required in production), kept apart from the tokens' own use of it;
 * without either (development), a random key of this process, whose URLs work only until it restarts.
 */
export function createSigner(secret: string | undefined, fallback?: string): Signer {
  const key = secret !== undefined ? Buffer.from(secret)
    : fallback !== undefined ? createHmac('sha256', fallback).update('spate export download URLs').digest()
      : randomBytes(32);
  const sign = (name: string) => createHmac('sha256', key).update(name).digest('base64url');
  return {
    sign,
    verify(name, signature) {
      if (signature === undefined) return false;
      const want = Buffer.from(sign(name));
      const got = Buffer.from(signature);
      return got.length === want.length && timingSafeEqual(got, want);
    },
  };
}
