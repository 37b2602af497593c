/**
 * A property-based fuzz of every operation in the OpenAPI document the app serves (fast-check), with
 * authentication off and on (an admin's token): whatever the path, query, headers and body, the answer is never a
 * 5xx, never carries a stack trace or driver text, has a status the document lists for the operation, and its JSON
 * body is valid against the schema the document gives for that status. Operations that exist to be slow or to end
 * the process are left out, with the reason.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import type { FastifyInstance } from 'fastify';
import { appOnNewDatabase, startApp } from './support/app.ts';
import { ADMIN, authEnv, bearer, login } from './support/auth.ts';

/** Left out, and why. */
const SKIPPED: Record<string, string> = {
  'POST /shutdown': 'ends the process under test',
  'GET /slow_query': 'a 5 s database sleep by design',
  'GET /long_running_query': 'a 10 s database sleep by design',
  'GET /performance/async': 'runs up to N real reads per call; covered by its own tests',
  'GET /performance/sync': 'runs up to N real reads per call; covered by its own tests',
  'POST /auth/token': 'argon2 per call, and a login rate limit that fails closed; covered by test/auth.test.ts',
  'POST /auth/register': 'argon2 per call; covered by test/auth.test.ts',
  'GET /dashboard/events': 'a server-sent event stream that lasts while the client listens; covered by test/dashboard.test.ts',
  'GET /jobs/{id}/events': 'a server-sent event stream until the job ends; covered by test/jobs-api.test.ts',
};
const RUNS = Number(process.env.FUZZ_RUNS ?? 40);
const NO_LEAK = /\bat [\w.<>$ ]+ \([^)]*:\d+:\d+\)|node_modules|PostgresError|ECONN|syntax error|SQLSTATE|relation "|TypeError|ReferenceError/i;

interface Operation {
  method: string;
  path: string;
  parameters: { in: string; name: string }[];
  responses: Record<string, { content?: Record<string, { schema?: unknown }> }>;
  hasBody: boolean;
  pointer: string;
}

function operationsOf(doc: { paths: Record<string, Record<string, Omit<Operation, 'method' | 'path' | 'pointer' | 'hasBody'> & { requestBody?: unknown }>> }): Operation[] {
  const out: Operation[] = [];
  for (const [path, ops] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      const pointer = `#/paths/${path.replace(/~/g, '~0').replace(/\//g, '~1')}/${method}`;
      out.push({ method: method.toUpperCase(), path, parameters: op.parameters ?? [], responses: op.responses, hasBody: op.requestBody !== undefined, pointer });
    }
  }
  return out;
}

/** Strings a hostile client sends: anything, near-valid values, and the classics. */
const hostileString = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.uuid(),
  fc.constantFrom('', ' ', '0', '-1', '1e3', '0x10', '10.0', 'NaN', 'null', 'true', '[]', '{}', '%00', '\u0000', '\ud800', 'é', '../../etc/passwd', "' OR 1=1 --", 'x'.repeat(300)),
  fc.integer({ min: -1000, max: 100_000 }).map(String),
);
const userish = fc.record({
  name: fc.oneof(fc.string({ maxLength: 120 }), fc.constant('Ada'), fc.constant(null), fc.integer()),
  email: fc.oneof(fc.emailAddress(), fc.string({ maxLength: 80 }), fc.constant(null)),
  age: fc.oneof(fc.integer({ min: -5, max: 200 }), fc.double(), fc.string({ maxLength: 5 }), fc.constant(null)),
}, { requiredKeys: [] });
const body = fc.oneof(
  userish,
  fc.array(userish, { maxLength: 4 }),
  fc.record({ users: fc.array(userish, { maxLength: 4 }) }),
  fc.record({ name: hostileString, password: hostileString, refresh_token: hostileString, scopes: fc.array(hostileString, { maxLength: 3 }) }, { requiredKeys: [] }),
  fc.jsonValue({ maxDepth: 3 }),
  fc.constant({ __proto__: { admin: true }, constructor: { prototype: { x: 1 } } }),
);

/** A path segment as a client would send it; a lone surrogate (no UTF-8 form) as the bytes a broken client sends. */
function encoded(segment: string): string {
  try {
    return encodeURIComponent(segment);
  } catch {
    return '%ED%A0%80';
  }
}

function validatorFor(doc: object) {
  const ajv = new Ajv2020({ strict: false, allErrors: true, validateFormats: true });
  addFormats.default(ajv);
  ajv.addSchema(doc, 'doc');
  return (op: Operation, status: string) => ajv.getSchema(`doc${op.pointer}/responses/${status}/content/application~1json/schema`);
}

async function fuzz(app: FastifyInstance, headers: Record<string, string>, t: { diagnostic(m: string): void }) {
  const doc = (await app.inject({ url: '/openapi.json', headers })).json();
  const validate = validatorFor(doc);
  let requests = 0;
  for (const op of operationsOf(doc)) {
    const name = `${op.method} ${op.path}`;
    if (SKIPPED[name]) {
      t.diagnostic(`${name} left out: ${SKIPPED[name]}`);
      continue;
    }
    const queryNames = op.parameters.filter((p) => p.in === 'query').map((p) => p.name);
    await fc.assert(fc.asyncProperty(
      // Not `.` or `..`: dot-segments name another resource whatever their encoding (RFC 3986, 5.2.4, and 2.3:
      // `%2E` is `.`), so `/webhooks/./deliveries` is `/webhooks/deliveries`, whose GET is a correct 405.
      fc.array(hostileString.filter((s) => s !== '.' && s !== '..'), { minLength: 1, maxLength: 1 }),
      fc.dictionary(fc.constantFrom(...(queryNames.length ? queryNames : ['x'])), hostileString, { maxKeys: 3 }),
      fc.option(body, { nil: undefined }),
      fc.option(hostileString.filter((s) => /^[ -~]*$/.test(s)), { nil: undefined }),
      async ([segment], query, payload, headerValue) => {
        const url = op.path.replace(/\{[^}]+\}/g, encoded(segment!)) + '?' + new URLSearchParams(query).toString();
        const extra: Record<string, string> = headerValue === undefined ? {} : { 'idempotency-key': headerValue, 'x-request-timeout': headerValue };
        const res = await app.inject({
          method: op.method as 'GET', url, headers: { ...headers, ...extra },
          ...(op.hasBody && payload !== undefined ? { payload: payload as object } : {}),
        });
        requests++;
        const where = `${name} ${url} -> ${res.statusCode} ${res.body.slice(0, 300)}`;
        assert.ok(res.statusCode < 500, where);
        assert.doesNotMatch(res.body, NO_LEAK, where);
        const status = String(res.statusCode);
        assert.ok(op.responses[status], `${where}: status not in the document`);
        if (/^application\/json/.test(String(res.headers['content-type'] ?? '')) && res.body !== '') {
          const check = validate(op, status);
          if (check && !check(res.json())) assert.fail(`${where}: ${JSON.stringify(check.errors?.slice(0, 3))}`);
        }
      },
    ), { numRuns: RUNS, includeErrorInReport: true });
  }
  return requests;
}

describe('fuzz of every documented operation', () => {
  const ctx = appOnNewDatabase({ RATE_LIMIT_MAX: '0' });

  test('authentication off: no 5xx, no leak, every answer as documented', async (t) => {
    const n = await fuzz(ctx.app, {}, t);
    t.diagnostic(`${n} requests`);
  });

  test('authentication on, as an admin: the same', async (t) => {
    const app = await startApp(ctx.db.url, authEnv({ RATE_LIMIT_MAX: '0' }));
    try {
      const admin = await login(app, ADMIN.email, ADMIN.password);
      const n = await fuzz(app, bearer(admin.access_token), t);
      t.diagnostic(`${n} requests`);
    } finally {
      await app.close();
    }
  });
});
