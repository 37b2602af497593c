/**
 * Reading an import file record by record, with flat memory: CSV (RFC 4180, a header line naming the columns)
 * or NDJSON (one JSON object per line), from any byte stream.
 *
 * What makes one record unreadable is reported on that record and reading goes on with the next: invalid UTF-8,
 * a record longer than `MAX_RECORD_BYTES` (the rest of it is skipped up to the next line), bad CSV quoting,
 * malformed JSON. Only a CSV header that does not name the columns stops the whole file.
 */
import { isUtf8 } from 'node:buffer';
import { errors } from '../../platform/errors.ts';
import { NOT_UNICODE_MSG } from '../../platform/http/json-body.ts';

/** The longest record read: far past any valid row (a name of 1,000 characters, an email of 254). */
export const MAX_RECORD_BYTES = 64 * 1024;

export type ImportFormat = 'csv' | 'ndjson';

/** One record: its fields by column name (CSV: text; NDJSON: JSON values), or why it could not be read. */
export type RawRecord =
  | { line: number; value: Record<string, unknown>; problem?: undefined }
  | { line: number; value?: undefined; problem: { msg: string; type: string; loc?: string } };

export const COLUMNS = ['name', 'email', 'age'] as const;

const unreadable = (line: number, msg: string, type: string, loc?: string): RawRecord => ({ line, problem: { msg, type, loc } });

/** Lines of text, each with its number, split from a byte stream; invalid UTF-8 and overlong lines flagged. */
type Line = { line: number; text: string; bad?: 'utf8' | 'long' };

async function* lines(source: AsyncIterable<Buffer>): AsyncGenerator<Line[]> {
  let carry: Buffer | undefined;
  let n = 0;
  let skipping = false; // inside an overlong line, until its end
  let first = true;
  for await (let chunk of source) {
    if (first) {
      first = false;
      if (chunk[0] === 0xef && chunk[1] === 0xbb && chunk[2] === 0xbf) chunk = chunk.subarray(3);
    }
    const out: Line[] = [];
    let start = 0;
    if (skipping) {
      const nl = chunk.indexOf(10);
      if (nl < 0) continue;
      skipping = false;
      start = nl + 1;
    }
    const last = chunk.lastIndexOf(10);
    if (last < start) {
      carry = carry ? Buffer.concat([carry, chunk.subarray(start)]) : chunk.subarray(start);
      if (carry.length > MAX_RECORD_BYTES) {
        out.push({ line: ++n, text: '', bad: 'long' });
        carry = undefined;
        skipping = true;
        yield out;
      }
      continue;
    }
    const region = carry ? Buffer.concat([carry, chunk.subarray(start, last + 1)]) : chunk.subarray(start, last + 1);
    carry = last + 1 < chunk.length ? Buffer.from(chunk.subarray(last + 1)) : undefined;
    if (isUtf8(region)) {
      const text = region.toString('utf8');
      let from = 0;
      for (let nl = text.indexOf('\n'); nl >= 0; nl = text.indexOf('\n', from)) {
        const t = text.slice(from, nl);
        from = nl + 1;
        out.push(t.length * 3 > MAX_RECORD_BYTES && Buffer.byteLength(t) > MAX_RECORD_BYTES ? { line: ++n, text: '', bad: 'long' } : { line: ++n, text: t });
      }
    } else {
      // Line by line to find the bad ones; rare, so no hurry.
      let from = 0;
      for (let nl = region.indexOf(10); nl >= 0; nl = region.indexOf(10, from)) {
        const b = region.subarray(from, nl);
        from = nl + 1;
        if (b.length > MAX_RECORD_BYTES) out.push({ line: ++n, text: '', bad: 'long' });
        else if (!isUtf8(b)) out.push({ line: ++n, text: '', bad: 'utf8' });
        else out.push({ line: ++n, text: b.toString('utf8') });
      }
    }
    if (carry && carry.length > MAX_RECORD_BYTES) {
      out.push({ line: ++n, text: '', bad: 'long' });
      carry = undefined;
      skipping = true;
    }
    yield out;
  }
  if (carry && carry.length > 0 && !skipping) {
    yield [isUtf8(carry) ? { line: ++n, text: carry.toString('utf8') } : { line: ++n, text: '', bad: 'utf8' }];
  }
}

const stripCr = (s: string) => (s.endsWith('\r') ? s.slice(0, -1) : s);
const quotes = (s: string) => {
  let k = 0;
  for (let i = s.indexOf('"'); i >= 0; i = s.indexOf('"', i + 1)) k++;
  return k;
};

/** The fields of one CSV record (RFC 4180), or undefined when its quoting is malformed. */
export function csvFields(record: string): string[] | undefined {
  if (!record.includes('"')) return record.split(',');
  const fields: string[] = [];
  let i = 0;
  for (;;) {
    if (record[i] === '"') {
      let value = '';
      let j = i + 1;
      for (;;) {
        const q = record.indexOf('"', j);
        if (q < 0) return undefined;
        value += record.slice(j, q);
        if (record[q + 1] === '"') { value += '"'; j = q + 2; continue; }
        i = q + 1;
        break;
      }
      fields.push(value);
      if (i === record.length) return fields;
      if (record[i] !== ',') return undefined;
      i++;
    } else {
      const c = record.indexOf(',', i);
      const value = c < 0 ? record.slice(i) : record.slice(i, c);
      if (value.includes('"')) return undefined;
      fields.push(value);
      if (c < 0) return fields;
      i = c + 1;
    }
  }
}

/** CSV records, as objects keyed by the header's column names; the header must name every one of `COLUMNS`. */
async function* csvRecords(source: AsyncIterable<Buffer>): AsyncGenerator<RawRecord[]> {
  let header: string[] | undefined;
  let open: { line: number; text: string } | undefined; // a quoted field running over line ends
  for await (const batch of lines(source)) {
    const out: RawRecord[] = [];
    for (const l of batch) {
      if (l.bad) {
        open = undefined;
        out.push(l.bad === 'long'
          ? unreadable(l.line, `Line is longer than ${MAX_RECORD_BYTES} bytes`, 'line_too_long')
          : unreadable(l.line, NOT_UNICODE_MSG, 'string_unicode'));
        continue;
      }
      let text: string;
      let line: number;
      if (open) {
        open.text += `\n${l.text}`;
        if (open.text.length > MAX_RECORD_BYTES) {
          out.push(unreadable(open.line, `Record is longer than ${MAX_RECORD_BYTES} bytes`, 'line_too_long'));
          open = undefined;
          continue;
        }
        if (quotes(open.text) % 2 === 1) continue;
        ({ text, line } = open);
        open = undefined;
      } else {
        if (quotes(l.text) % 2 === 1) { open = { line: l.line, text: l.text }; continue; }
        ({ text, line } = l);
      }
      text = stripCr(text);
      if (text === '') continue;
      const fields = csvFields(text);
      if (header === undefined) {
        header = checkedHeader(fields);
        continue;
      }
      if (fields === undefined) { out.push(unreadable(line, 'Malformed CSV quoting', 'csv_quoting')); continue; }
      if (fields.length > header.length) {
        out.push(unreadable(line, `Expected ${header.length} fields, found ${fields.length}`, 'csv_fields'));
        continue;
      }
      const value: Record<string, unknown> = {};
      // Fewer fields than columns: the missing ones stay absent, so validation names each as required.
      for (let k = 0; k < fields.length; k++) value[header[k]!] = fields[k];
      out.push({ line, value });
    }
    if (out.length) yield out;
  }
  if (open) yield [unreadable(open.line, 'Malformed CSV quoting: a quoted field is never closed', 'csv_quoting')];
  if (header === undefined) throw errors.importRefused('The file is empty: a CSV import starts with the header line name,email,age');
}

function checkedHeader(fields: string[] | undefined): string[] {
  const names = (fields ?? []).map((f) => f.trim().toLowerCase());
  const missing = COLUMNS.filter((c) => !names.includes(c));
  if (missing.length > 0) {
    throw errors.importRefused(`The CSV header must name the columns ${COLUMNS.join(', ')}; missing: ${missing.join(', ')}. Nothing was imported.`);
  }
  const twice = COLUMNS.filter((c) => names.indexOf(c) !== names.lastIndexOf(c));
  if (twice.length > 0) throw errors.importRefused(`The CSV header names ${twice.join(', ')} more than once. Nothing was imported.`);
  return names;
}

/** NDJSON records: each non-blank line one JSON object. */
async function* ndjsonRecords(source: AsyncIterable<Buffer>): AsyncGenerator<RawRecord[]> {
  for await (const batch of lines(source)) {
    const out: RawRecord[] = [];
    for (const l of batch) {
      if (l.bad) {
        out.push(l.bad === 'long'
          ? unreadable(l.line, `Line is longer than ${MAX_RECORD_BYTES} bytes`, 'line_too_long')
          : unreadable(l.line, NOT_UNICODE_MSG, 'string_unicode'));
        continue;
      }
      const text = stripCr(l.text);
      if (text.trim() === '') continue;
      let value: unknown;
      try {
        value = JSON.parse(text);
      } catch {
        out.push(unreadable(l.line, 'Invalid JSON', 'json_invalid'));
        continue;
      }
      if (value === null || typeof value !== 'object' || Array.isArray(value)) {
        out.push(unreadable(l.line, 'Input should be a valid dictionary', 'dict_type'));
        continue;
      }
      out.push({ line: l.line, value: value as Record<string, unknown> });
    }
    if (out.length) yield out;
  }
}

export function readRecords(format: ImportFormat, source: AsyncIterable<Buffer>): AsyncGenerator<RawRecord[]> {
  return format === 'csv' ? csvRecords(source) : ndjsonRecords(source);
}

