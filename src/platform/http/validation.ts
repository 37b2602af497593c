/**
 * Request validation: two Ajv instances and the mapping of their errors onto FastAPI's 422 shape.
 *
 * Query strings, path params and headers are text, so they are coerced ("10" -> 10), but only from decimal
 * notation (`INTEGER_TEXT`, `NUMBER_TEXT`): Ajv alone would take anything `Number()` takes (`0x10`, `1e3`,
 * `" "`), which pydantic refuses. JSON bodies are not coerced: a string where an integer belongs is a 422, as in
 * the original service. Unknown body fields are removed before the handler sees them ("ignored, never stored").
 *
 * Every invalid field is reported, one issue per `loc` (the first rule it breaks), as FastAPI does: a batch with
 * two bad items names both.
 */
import { Ajv, type ErrorObject } from 'ajv';
import addFormatsModule from 'ajv-formats';
import type { FastifySchemaCompiler } from 'fastify';
import { errors, type AppError, type ValidationIssue } from '../errors.ts';

// ajv-formats is CommonJS with a default export; under NodeNext the callable sits on `.default`.
const addFormats = addFormatsModule as unknown as typeof addFormatsModule.default;

function makeAjv(coerce: boolean, strip = true): Ajv {
  const ajv = new Ajv({
    coerceTypes: coerce ? 'array' : false,
    useDefaults: true,
    // Unknown fields are dropped (FastAPI ignores them), but never unknown headers: a request carries many that
    // no route schema names (credentials, deadlines, tokens), and the hooks after validation still read them.
    removeAdditional: strip ? 'all' : false,
    // Every failing field, not just the first: formatValidationErrors keeps one issue per field.
    allErrors: true,
    // Errors carry their schema, so a schema can name the message of its pattern (`patternIssue`).
    verbose: true,
    strict: false,
  });
  addFormats(ajv, ['email', 'uuid', 'date-time']);
  return ajv;
}

const bodyAjv = makeAjv(false);
const textAjv = makeAjv(true);
const headerAjv = makeAjv(true, false);

/** An integer as text in a query, path or header: optional sign, decimal digits. */
export const INTEGER_TEXT = /^[+-]?\d+$/;
/** A number as text: optional sign, decimal digits, an optional fraction with at least one digit. */
export const NUMBER_TEXT = /^[+-]?\d+(\.\d+)?$/;

type Validate = ((data: unknown) => boolean) & { errors?: ErrorObject[] | null };

/** The top-level properties of a text part that Ajv would coerce to a number, with the grammar each must match. */
function numericProperties(schema: object): [string, 'integer' | 'number'][] {
  const props = (schema as { properties?: Record<string, { type?: unknown }> }).properties ?? {};
  return Object.entries(props).flatMap(([name, p]) =>
    p.type === 'integer' || p.type === 'number' ? [[name, p.type] as [string, 'integer' | 'number']] : []);
}

/** Refuses numeric text outside decimal notation before Ajv coerces it, with the error Ajv gives for a non-number. */
function decimalOnly(validate: Validate, numeric: [string, 'integer' | 'number'][]): Validate {
  const checked: Validate = (data) => {
    const values = (data ?? {}) as Record<string, unknown>;
    const bad = numeric.filter(([name, type]) => {
      const v = values[name];
      return typeof v === 'string' && !(type === 'integer' ? INTEGER_TEXT : NUMBER_TEXT).test(v);
    });
    if (bad.length > 0) {
      checked.errors = bad.map(([name, type]) => ({
        instancePath: `/${name}`, schemaPath: `#/properties/${name}/type`, keyword: 'type', params: { type },
      }));
      return false;
    }
    const ok = validate(data);
    checked.errors = validate.errors;
    return ok;
  };
  return checked;
}

export const validatorCompiler: FastifySchemaCompiler<object> = ({ schema, httpPart }) => {
  if (httpPart === 'body') return bodyAjv.compile(schema);
  const validate = (httpPart === 'headers' ? headerAjv : textAjv).compile(schema);
  const numeric = numericProperties(schema);
  return numeric.length ? decimalOnly(validate, numeric) : validate;
};

/**
 * Schema keywords that give a `pattern` its own 422 message and type (a pattern says nothing to a client), e.g.
 * the name rule's "1 to 100 characters after trimming". Spread into a string schema.
 */
export const patternIssue = (msg: string, type: string) => ({ 'x-pattern-issue': { msg, type } });

const LOC_ROOT: Record<string, string> = { body: 'body', querystring: 'query', params: 'path', headers: 'header' };
const TYPE_NAMES: Record<string, string> = {
  integer: 'int', number: 'float', string: 'string', boolean: 'bool', object: 'dict', array: 'list',
};

function issueOf(e: ErrorObject, root: string): ValidationIssue {
  const loc: (string | number)[] = [root];
  for (const seg of e.instancePath.split('/').slice(1)) loc.push(/^\d+$/.test(seg) ? Number(seg) : seg);
  const p = e.params as Record<string, unknown>;
  switch (e.keyword) {
    case 'required':
      return { loc: [...loc, String(p.missingProperty)], msg: 'Field required', type: 'missing' };
    case 'type': {
      const t = String(Array.isArray(p.type) ? p.type[0] : p.type);
      const name = TYPE_NAMES[t] ?? t;
      const parsing = root !== 'body' && (t === 'integer' || t === 'number' || t === 'boolean');
      return { loc, msg: `Input should be a valid ${t}`, type: parsing ? `${name}_parsing` : `${name}_type` };
    }
    case 'minimum':
      return { loc, msg: `Input should be greater than or equal to ${p.limit}`, type: 'greater_than_equal' };
    case 'maximum':
      return { loc, msg: `Input should be less than or equal to ${p.limit}`, type: 'less_than_equal' };
    case 'exclusiveMinimum':
      return { loc, msg: `Input should be greater than ${p.limit}`, type: 'greater_than' };
    case 'minLength':
      return { loc, msg: `String should have at least ${p.limit} character${p.limit === 1 ? '' : 's'}`, type: 'string_too_short' };
    case 'maxLength':
      return { loc, msg: `String should have at most ${p.limit} characters`, type: 'string_too_long' };
    case 'minItems':
      return { loc, msg: `List should have at least ${p.limit} item${p.limit === 1 ? '' : 's'}`, type: 'too_short' };
    case 'maxItems':
      return { loc, msg: `List should have at most ${p.limit} items`, type: 'too_long' };
    case 'format':
      return p.format === 'email'
        ? { loc, msg: 'value is not a valid email address', type: 'value_error' }
        : { loc, msg: `Input should be a valid ${p.format}`, type: `${p.format}_parsing` };
    case 'pattern': {
      const named = (e.parentSchema as { 'x-pattern-issue'?: { msg: string; type: string } } | undefined)?.['x-pattern-issue'];
      return named ? { loc, ...named } : { loc, msg: `String should match pattern '${p.pattern}'`, type: 'string_pattern_mismatch' };
    }
    case 'enum':
      return { loc, msg: `Input should be ${(p.allowedValues as unknown[]).map((v) => `'${v}'`).join(', ')}`, type: 'enum' };
    default:
      return { loc, msg: e.message ?? 'Invalid value', type: e.keyword };
  }
}

/**
 * Fastify's schemaErrorFormatter: Ajv errors of one request part become one 422 `AppError`, one issue per
 * `loc`: the first rule each field breaks (Ajv checks lengths before patterns before formats).
 */
export function formatValidationErrors(errs: ErrorObject[], dataVar: string): AppError {
  const root = LOC_ROOT[dataVar] ?? dataVar;
  // anyOf/oneOf failures carry the errors of every branch; the branch-level ones say nothing useful alone.
  const useful = errs.filter((e) => e.keyword !== 'anyOf' && e.keyword !== 'oneOf');
  const byLoc = new Map<string, ValidationIssue>();
  for (const e of useful.length ? useful : errs) {
    const issue = issueOf(e, root);
    const key = JSON.stringify(issue.loc);
    if (!byLoc.has(key)) byLoc.set(key, issue);
  }
  return errors.validation([...byLoc.values()]);
}
