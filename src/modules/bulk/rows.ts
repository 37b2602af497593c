/**
 * An import's rows checked by exactly the rules of `POST /users`: the same `UserCreate` schema compiled by the
 * same body validator (src/platform/http/validation.ts) and reported in the same 422 issues, the name trimmed as
 * the users service stores it, and the storage domain of src/db/user-fields.ts (no NUL, lengths as stored). A
 * row the API would refuse is refused here with the `loc` and `msg` the API would give, plus its line.
 *
 * CSV fields are text: `age` is taken as an integer when it is one in decimal notation (as a query string's
 * integer is), and otherwise left as text so that the schema reports it as the wrong type.
 */
import type { ErrorObject } from 'ajv';
import type { ImportRow } from '../../db/bulk-store.ts';
import { invalidFields } from '../../db/user-fields.ts';
import { INTEGER_TEXT, formatValidationErrors, validatorCompiler } from '../../platform/http/validation.ts';
import { clean } from '../users/service.ts';
import { UserCreate } from '../users/user-schemas.ts';
import { NOT_UNICODE_MSG } from '../../platform/http/json-body.ts';
import type { ImportFormat, RawRecord } from './records.ts';

/** One refused row, as the job's report lists it. */
export interface RowError {
  line: number;
  loc: (string | number)[];
  msg: string;
}

type Validate = ((data: unknown) => boolean) & { errors?: ErrorObject[] | null };

const validate = validatorCompiler({ schema: UserCreate, httpPart: 'body', method: 'POST', url: '/users' }) as Validate;

const wellFormed = (v: unknown) => typeof v !== 'string' || (v as string & { isWellFormed(): boolean }).isWellFormed();

/** The row as it would be stored, or every issue the API would report for it. */
export function checkRow(format: ImportFormat, r: RawRecord): ImportRow | RowError[] {
  if (r.problem) return [{ line: r.line, loc: r.problem.loc ? ['body', r.problem.loc] : ['body'], msg: r.problem.msg }];
  const value = r.value;
  if (format === 'csv' && typeof value.age === 'string' && INTEGER_TEXT.test(value.age)) value.age = Number(value.age);
  // JSON text can escape a lone surrogate; stored, it would read back as U+FFFD (src/platform/http/json-body.ts).
  if (format === 'ndjson') {
    const bad = (['name', 'email'] as const).filter((f) => !wellFormed(value[f]));
    if (bad.length) return bad.map((f) => ({ line: r.line, loc: ['body', f], msg: NOT_UNICODE_MSG }));
  }
  if (!validate(value)) {
    const detail = formatValidationErrors(validate.errors ?? [], 'body').detail as { loc: (string | number)[]; msg: string }[];
    return detail.map((i) => ({ line: r.line, loc: i.loc, msg: i.msg }));
  }
  const user = clean(value as unknown as ImportRow);
  const outside = invalidFields(user);
  if (outside.length) return outside.map((f) => ({ line: r.line, loc: ['body', f], msg: 'Invalid input for the database' }));
  return { line: r.line, name: user.name, email: user.email, age: user.age };
}

/** The tally of an import: rows read and refused, and the first `max` errors. */
export class ImportReport {
  read = 0;
  rejected = 0;
  readonly errors: RowError[] = [];

  constructor(private readonly max: number) {}

  refuse(errs: RowError[]): void {
    this.rejected += 1;
    for (const e of errs) if (this.errors.length < this.max) this.errors.push(e);
  }
}

/**
 * The valid rows of `records`, a batch per batch of records; refused ones go to `report`. `onBatch` sees the
 * report after each batch (progress).
 */
export async function* validRows(
  format: ImportFormat,
  records: AsyncIterable<RawRecord[]>,
  report: ImportReport,
  onBatch?: () => Promise<void>,
): AsyncGenerator<ImportRow[]> {
  for await (const batch of records) {
    const ok: ImportRow[] = [];
    for (const r of batch) {
      report.read += 1;
      const checked = checkRow(format, r);
      if (Array.isArray(checked)) report.refuse(checked);
      else ok.push(checked);
    }
    if (ok.length) yield ok;
    await onBatch?.();
  }
}
