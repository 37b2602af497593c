/**
 * Body encoders of `GET /users/stream`: JSON, NDJSON and CSV, each turning one page of users into one chunk.
 *
 * A stream cannot go through Fastify's response serializer, so the User serializers are compiled here once,
 * with fast-json-stringify, from the same `UserPublic` schema the other routes use: identical field order and
 * timestamps (ISO-8601 UTC, milliseconds, `Z`) whatever route a client reads a user from.
 */
import fastJson from 'fast-json-stringify';
import { Type } from 'typebox';
import type { User } from '../../db/users-store.ts';
import { negotiate } from '../../platform/http/accept.ts';
import { UserPublic } from './user-schemas.ts';

export type StreamFormat = 'json' | 'ndjson' | 'csv';

export interface StreamTotals {
  rows: number;
  pages: number;
  fetchSize: number;
}

/** The media types a stream is offered in, in the server's order of preference (JSON wins a tie). */
const OFFERS = ['application/json', 'application/x-ndjson', 'text/csv'] as const;

/** Turns a stream of pages into body text: `head`, then one `page` per page (possibly none), then `tail`. */
export interface StreamEncoder {
  readonly contentType: string;
  head(): string;
  page(users: readonly User[]): string;
  tail(totals: StreamTotals): string;
}

const serializeUser: (user: User) => string = fastJson(UserPublic as object);
const serializeUsers: (users: readonly User[]) => string = fastJson(Type.Array(UserPublic) as object);

const CONTENT_TYPES: Record<StreamFormat, string> = {
  json: 'application/json; charset=utf-8',
  ndjson: 'application/x-ndjson; charset=utf-8',
  csv: 'text/csv; charset=utf-8',
};

const ACCEPTED: Record<(typeof OFFERS)[number], StreamFormat> = {
  'application/x-ndjson': 'ndjson',
  'text/csv': 'csv',
  'application/json': 'json',
};

/**
 * The format asked for: `format=` wins; else the one `Accept` ranks highest, q-values honoured
 * (src/platform/http/accept.ts); else JSON (a client that accepts none of them still gets an answer).
 */
export function pickFormat(format: StreamFormat | undefined, accept: string | undefined): StreamFormat {
  if (format) return format;
  const chosen = negotiate(accept, OFFERS);
  return chosen === undefined ? 'json' : ACCEPTED[chosen];
}

export function createEncoder(format: StreamFormat): StreamEncoder {
  switch (format) {
    case 'ndjson': return ndjson();
    case 'csv': return csv();
    case 'json': return json();
  }
}

/** `{"users":[...],"metadata":{...}}`: valid JSON for any number of rows, with the totals written last. */
function json(): StreamEncoder {
  let first = true;
  return {
    contentType: CONTENT_TYPES.json,
    head: () => '{"users":[',
    page(users) {
      if (users.length === 0) return '';
      // The array serializer is one call per page; its brackets are ours to place.
      const items = serializeUsers(users).slice(1, -1);
      const out = first ? items : `,${items}`;
      first = false;
      return out;
    },
    tail: ({ rows, pages, fetchSize }) =>
      `],"metadata":{"total_returned":${rows},"pages_fetched":${pages},"fetch_size":${fetchSize},"streaming_enabled":true}}`,
  };
}

/** One User per line. */
function ndjson(): StreamEncoder {
  return {
    contentType: CONTENT_TYPES.ndjson,
    head: () => '',
    page(users) {
      let out = '';
      for (const user of users) out += `${serializeUser(user)}\n`;
      return out;
    },
    tail: () => '',
  };
}

export const CSV_HEADER = 'id,name,email,age,created_at,updated_at';

/**
 * RFC 4180: CRLF line ends, a header line, and a field quoted when it holds a comma, quote, CR or LF, with inner
 * quotes doubled.
 *
 * Values are written verbatim, so the export round-trips exactly. A name such as `=HYPERLINK(...)` is therefore a
 * formula to a spreadsheet that opens the file ("CSV injection"); neutralising it (OWASP: prefix `'`) would
 * change the data, so it is left to consumers that import into spreadsheets.
 */
function csv(): StreamEncoder {
  // Rows written together share a timestamp (an import's rows, often the same `Date`): formatting one once
  // matters on a million-row export.
  let lastTime: Date | string | undefined;
  let lastText = '';
  const iso = (t: Date | string) => {
    if (t !== lastTime) {
      lastTime = t;
      lastText = isoOf(t);
    }
    return lastText;
  };
  return {
    contentType: CONTENT_TYPES.csv,
    head: () => `${CSV_HEADER}\r\n`,
    page(users) {
      let out = '';
      for (const u of users) {
        out += `${u.id},${csvField(u.name)},${csvField(u.email)},${u.age},${iso(u.created_at)},${iso(u.updated_at)}\r\n`;
      }
      return out;
    },
    tail: () => '',
  };
}

const NEEDS_QUOTES = /[",\r\n]/;

export function csvField(value: string): string {
  return NEEDS_QUOTES.test(value) ? `"${value.replaceAll('"', '""')}"` : value;
}

const isoOf = (t: Date | string) => (t instanceof Date ? t : new Date(t)).toISOString();
