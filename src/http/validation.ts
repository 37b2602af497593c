/**
 * Request validation: two Ajv instances and the mapping of their errors onto FastAPI's 422 shape.
 *
 * Query strings, path params and headers are text, so they are coerced ("10" -> 10). JSON bodies are not: a
 * string where an integer belongs is a 422, as in the original service. Unknown body fields are removed before
 * the handler sees them ("ignored, never stored").
 */
import { Ajv, type ErrorObject } from 'ajv';
import addFormatsModule from 'ajv-formats';
import type { FastifySchemaCompiler } from 'fastify';
import { errors, type AppError, type ValidationIssue } from '../errors.ts';
import { NAME_PATTERN } from '../users/schemas.ts';

// ajv-formats is CommonJS with a default export; under NodeNext the callable sits on `.default`.
const addFormats = addFormatsModule as unknown as typeof addFormatsModule.default;

function makeAjv(coerce: boolean): Ajv {
  const ajv = new Ajv({
    coerceTypes: coerce ? 'array' : false,
    useDefaults: true,
    removeAdditional: 'all',
    allErrors: false,
    strict: false,
  });
  addFormats(ajv, ['email', 'uuid', 'date-time']);
  return ajv;
}

const bodyAjv = makeAjv(false);
const textAjv = makeAjv(true);

export const validatorCompiler: FastifySchemaCompiler<object> = ({ schema, httpPart }) =>
  (httpPart === 'body' ? bodyAjv : textAjv).compile(schema);

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
    case 'pattern':
      return p.pattern === NAME_PATTERN
        ? { loc, msg: 'String should have 1 to 100 characters after trimming', type: 'string_too_long_or_blank' }
        : { loc, msg: `String should match pattern '${p.pattern}'`, type: 'string_pattern_mismatch' };
    case 'enum':
      return { loc, msg: `Input should be ${(p.allowedValues as unknown[]).map((v) => `'${v}'`).join(', ')}`, type: 'enum' };
    default:
      return { loc, msg: e.message ?? 'Invalid value', type: e.keyword };
  }
}

/** Fastify's schemaErrorFormatter: Ajv errors of one request part become one 422 `AppError`. */
export function formatValidationErrors(errs: ErrorObject[], dataVar: string): AppError {
  const root = LOC_ROOT[dataVar] ?? dataVar;
  // anyOf/oneOf failures carry the errors of every branch; the branch-level ones say nothing useful alone.
  const useful = errs.filter((e) => e.keyword !== 'anyOf' && e.keyword !== 'oneOf');
  return errors.validation((useful.length ? useful : errs).map((e) => issueOf(e, root)));
}
