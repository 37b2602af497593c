/**
 * The JSON body parser: Fastify's own (secure-json-parse), behind three checks so that what a client is told
 * was stored is what is stored.
 *
 * - A `charset` other than UTF-8 is `415`: decoding Latin-1 as UTF-8 would store "Jos\uFFFD" for "José".
 * - Invalid UTF-8 and unpaired surrogates (`"a\ud800b"`) are `422` naming the field: the first would be stored
 *   as U+FFFD, the second echoed as sent and read back as U+FFFD.
 * - A `__proto__` key (or `constructor.prototype`) is removed like any unknown field, instead of refusing the
 *   whole body; the object never gains a prototype from it (prototype poisoning stays impossible).
 */
import { isUtf8 } from 'node:buffer';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { errors, type ValidationIssue } from '../errors.ts';

/** The `charset` labels of UTF-8 we accept (WHATWG Encoding labels, compared case-insensitively). */
const UTF8_LABELS = new Set(['utf-8', 'utf8', 'unicode-1-1-utf-8']);

/** The charset parameter of a Content-Type, lower-case and unquoted, or undefined when there is none. */
export function charsetOf(contentType: string | undefined): string | undefined {
  if (contentType === undefined) return undefined;
  for (const param of contentType.split(';').slice(1)) {
    const eq = param.indexOf('=');
    if (eq < 0 || param.slice(0, eq).trim().toLowerCase() !== 'charset') continue;
    return param.slice(eq + 1).trim().replace(/^"(.*)"$/, '$1').toLowerCase();
  }
  return undefined;
}

/** A high surrogate not followed by a low one, or a low one not preceded by a high one. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
/** A JSON `\u` escape of a surrogate: the only way valid UTF-8 text can carry one. */
const SURROGATE_ESCAPE = /\\u[dD][89a-fA-F]/;

/** The message of text that is not well-formed Unicode (also the bulk import's, src/modules/bulk/records.ts). */
export const NOT_UNICODE_MSG = 'Input should be valid Unicode text: invalid UTF-8 bytes or an unpaired surrogate';

const unicodeIssue = (loc: (string | number)[]): ValidationIssue => ({ loc, msg: NOT_UNICODE_MSG, type: 'string_unicode' });

/** The locations of every string (value or key) in `value` that is not well-formed Unicode. */
function illFormed(value: unknown, loc: (string | number)[], out: ValidationIssue[]): ValidationIssue[] {
  if (typeof value === 'string') {
    if (LONE_SURROGATE.test(value)) out.push(unicodeIssue(loc));
  } else if (Array.isArray(value)) {
    value.forEach((v, i) => illFormed(v, [...loc, i], out));
  } else if (value !== null && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      if (LONE_SURROGATE.test(k)) out.push(unicodeIssue([...loc, k]));
      else illFormed(v, [...loc, k], out);
    }
  }
  return out;
}

/** Length of the well-formed UTF-8 sequence at `i` (RFC 3629), or 0 when the byte there starts none. */
function sequenceAt(b: Buffer, i: number): number {
  const c = b[i]!;
  const cont = (j: number, lo = 0x80, hi = 0xbf) => j < b.length && b[j]! >= lo && b[j]! <= hi;
  if (c < 0x80) return 1;
  if (c >= 0xc2 && c <= 0xdf) return cont(i + 1) ? 2 : 0;
  if (c >= 0xe0 && c <= 0xef) return cont(i + 1, c === 0xe0 ? 0xa0 : 0x80, c === 0xed ? 0x9f : 0xbf) && cont(i + 2) ? 3 : 0;
  if (c >= 0xf0 && c <= 0xf4) {
    return cont(i + 1, c === 0xf0 ? 0x90 : 0x80, c === 0xf4 ? 0x8f : 0xbf) && cont(i + 2) && cont(i + 3) ? 4 : 0;
  }
  return 0;
}

/**
 * Invalid UTF-8 decoded with each bad byte as a lone low surrogate (Python's "surrogateescape"), so that after
 * parsing, the strings it fell in can be named like those with an escaped lone surrogate.
 */
function decodeMarkingInvalid(b: Buffer): string {
  let out = '';
  let run = 0;
  for (let i = 0; i < b.length;) {
    const n = sequenceAt(b, i);
    if (n > 0) {
      i += n;
      continue;
    }
    out += b.toString('utf8', run, i) + String.fromCharCode(0xdc00 + b[i]!);
    run = ++i;
  }
  return out + b.toString('utf8', run);
}

type Parse = (request: FastifyRequest, body: string, done: (err: Error | null, body?: unknown) => void) => void;

export default fp(
  async (app: FastifyInstance) => {
    // Fastify's parser, with poisoned keys removed rather than refused (the contract ignores unknown fields).
    const parseJson = app.getDefaultJsonParser('remove', 'remove') as unknown as Parse;
    app.removeContentTypeParser('application/json');
    app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (request, raw, done) => {
      const charset = charsetOf(request.headers['content-type']);
      if (charset !== undefined && !UTF8_LABELS.has(charset)) return done(errors.unsupportedCharset());
      const body = raw as Buffer;
      const valid = isUtf8(body);
      const text = valid ? body.toString('utf8') : decodeMarkingInvalid(body);
      parseJson(request, text, (err, value) => {
        if (err) return done(err);
        if (valid && !SURROGATE_ESCAPE.test(text)) return done(null, value);
        const issues = illFormed(value, ['body'], []);
        // Invalid bytes always refuse the body; where they fell is named when it can be found.
        if (issues.length > 0 || !valid) return done(errors.validation(issues.length ? issues : [unicodeIssue(['body'])]));
        done(null, value);
      });
    });
  },
  { name: 'json-body' },
);
