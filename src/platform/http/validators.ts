/**
 * HTTP validators and conditional requests (RFC 9110 sections 8.8.3 and 13): strong ETags, `If-None-Match`
 * (weak comparison, `304`) and `If-Match` (strong comparison, `412`), and the caching headers of a response.
 *
 * A user's ETag is derived from what its body is a function of, with no hashing per request: its id, its version
 * (`updated_at` moves forward on every change) and the representation's format (a digest, taken once, of the
 * response schema the serializer is compiled from, so a deploy that changes the format changes every tag). A list
 * page's is a digest of its JSON (one per shared page). Both are strong: the bytes of the body are the same
 * whenever the tag is.
 */
import { createHash } from 'node:crypto';
import type { FastifyReply } from 'fastify';

/** A user's ETag function; `format` is the digest of the representation's format that every tag ends with. */
export type UserEtag = ((u: { id: string; updated_at: Date }) => string) & { readonly format: string };

/** The strong ETag of one user's representation in the format `schema` describes (the route's response schema). */
export function userEtagOf(schema: unknown): UserEtag {
  const format = createHash('sha1').update(JSON.stringify(schema)).digest('base64url').slice(0, 8);
  return Object.assign((u: { id: string; updated_at: Date }) => `"${u.id}.${u.updated_at.getTime().toString(36)}.${format}"`, { format });
}

/** The strong ETag of a body. */
export const bodyEtag = (body: string): string => `"${createHash('sha1').update(body).digest('base64url')}"`;

/** The entity tags of an `If-Match` / `If-None-Match` value; `'*'` for the wildcard. */
function tagsOf(header: string): '*' | string[] {
  const value = header.trim();
  if (value === '*') return '*';
  return value.match(/(W\/)?"[^"]*"/g) ?? [];
}

const opaque = (tag: string) => (tag.startsWith('W/') ? tag.slice(2) : tag);

/**
 * True when `If-None-Match` matches the current tag (weak comparison), i.e. the client's copy is current and a
 * GET answers `304`. `*` matches any current representation.
 */
export function noneMatch(header: string | undefined, current: string): boolean {
  if (header === undefined) return false;
  const tags = tagsOf(header);
  return tags === '*' || tags.some((t) => opaque(t) === current);
}

/**
 * `If-Match` on the user `id` as the versions (ms) its strong tags name, for a write that checks them atomically
 * (RFC 9110 13.1.1: strong comparison, so a weak tag, one of another resource, or one of another format of
 * `etag`'s, matches nothing); `'*'` for any current representation; undefined without the header. An empty list
 * can never hold.
 */
export function ifMatchVersions(header: string | undefined, id: string, etag: UserEtag): '*' | number[] | undefined {
  if (header === undefined) return undefined;
  const tags = tagsOf(header);
  if (tags === '*') return '*';
  const versions: number[] = [];
  const prefix = `"${id.toLowerCase()}.`;
  const suffix = `.${etag.format}"`;
  for (const tag of tags) {
    if (!tag.startsWith(prefix) || !tag.endsWith(suffix) || tag.length < prefix.length + suffix.length) continue;
    const text = tag.slice(prefix.length, -suffix.length);
    const v = Number.parseInt(text, 36);
    if (Number.isSafeInteger(v) && v.toString(36) === text) versions.push(v);
  }
  return versions;
}

export interface CachingHeaders {
  cacheControl: string;
  vary: string;
}

/** Sets ETag, Cache-Control and Vary on a cacheable response. */
export function setValidators(reply: FastifyReply, etag: string, headers: CachingHeaders): void {
  reply.header('etag', etag).header('cache-control', headers.cacheControl).header('vary', headers.vary);
}
