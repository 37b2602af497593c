/**
 * Validation rules decided once (issue 11, finding 6), against a real PostgreSQL: numeric text in decimal
 * notation only (query and X-Request-Timeout alike), the email rule's local-part and label limits, and every
 * invalid item and field of a body reported, one issue per field, as FastAPI does.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { startApp, userBody } from './support/app.ts';
import { createTestDatabase, type TestDatabase } from './support/postgres.ts';

let db: TestDatabase;
let app: FastifyInstance;

before(async () => {
  db = await createTestDatabase();
  app = await startApp(db.url, { BATCH_MAX: '50' });
});
after(async () => {
  await app?.close();
  await db?.destroy();
});

type Issue = { loc: (string | number)[]; msg: string; type: string };
const locs = (issues: Issue[]) => issues.map((i) => i.loc);

describe('numeric query parameters: decimal notation only', () => {
  for (const value of ['0x10', '1e3', '1.5', '10.0', '', ' ', '0b11', 'Infinity', '1_000']) {
    test(`limit=${JSON.stringify(value)} is 422 int_parsing`, async () => {
      const res = await app.inject(`/users?limit=${encodeURIComponent(value)}`);
      assert.equal(res.statusCode, 422, res.body);
      assert.deepEqual(res.json().detail, [{ loc: ['query', 'limit'], msg: 'Input should be a valid integer', type: 'int_parsing' }]);
    });
  }

  test('the same grammar on every numeric query parameter', async () => {
    for (const url of ['/users/stream?fetch_size=1e2', '/users/stream/pages?max_pages=0x1', '/performance/async?requests=1e1']) {
      const res = await app.inject(url);
      assert.equal(res.statusCode, 422, url);
      assert.equal(res.json().detail[0].type, 'int_parsing', url);
    }
  });

  test('decimal integers pass, and a range error stays a range error', async () => {
    for (const value of ['16', '+16', '0016']) assert.equal((await app.inject(`/users?limit=${encodeURIComponent(value)}`)).statusCode, 200, value);
    const low = await app.inject('/users?limit=-1');
    assert.deepEqual([low.statusCode, low.json().detail[0].type], [422, 'greater_than_equal']);
  });
});

describe('X-Request-Timeout: the same number grammar', () => {
  for (const value of ['1e3', '5.', '.5', '0x10', '0', '-1', '3601', 'abc', '1,5']) {
    test(`${JSON.stringify(value)} is 400`, async () => {
      const res = await app.inject({ url: '/users', headers: { 'x-request-timeout': value } });
      assert.equal(res.statusCode, 400, res.body);
      assert.match(res.json().detail, /X-Request-Timeout/);
    });
  }

  test('decimal seconds up to an hour are accepted', async () => {
    for (const value of ['5', '0.5', '2.25', '3600', '+1']) {
      const res = await app.inject({ url: '/users', headers: { 'x-request-timeout': value } });
      assert.equal(res.statusCode, 200, `${value}: ${res.body}`);
    }
  });
});

describe('email: local part at most 64, each domain label at most 63', () => {
  const cases: [string, string, number][] = [
    ['64-character local part', `${'a'.repeat(64)}@example.com`, 201],
    ['65-character local part', `${'a'.repeat(65)}@example.com`, 422],
    ['63-character label', `ada@${'b'.repeat(63)}.example.com`, 201],
    ['64-character label', `ada@${'b'.repeat(64)}.example.com`, 422],
    ['64-character top-level label', `ada@example.${'c'.repeat(64)}`, 422],
    ['a label starting with a hyphen', 'ada@-example.com', 422],
    ['consecutive dots in the local part', 'a..b@example.com', 422],
    ['one label only', 'ada@localhost', 422],
  ];
  for (const [label, email, status] of cases) {
    test(`${label}: ${status}`, async () => {
      const res = await app.inject({ method: 'POST', url: '/users', payload: userBody({ email }) });
      assert.equal(res.statusCode, status, res.body);
      if (status === 422) assert.deepEqual(res.json().detail, [{ loc: ['body', 'email'], msg: 'value is not a valid email address', type: 'value_error' }]);
    });
  }

  test('PATCH applies the same rule', async () => {
    const { id } = (await app.inject({ method: 'POST', url: '/users', payload: userBody() })).json();
    const res = await app.inject({ method: 'PATCH', url: `/users/${id}`, payload: { email: `${'a'.repeat(65)}@example.com` } });
    assert.equal(res.statusCode, 422);
    assert.deepEqual(locs(res.json().detail), [['body', 'email']]);
  });
});

describe('every invalid item and field is reported', () => {
  test('a batch with two invalid items names both, as an object and as a bare array', async () => {
    const users = [userBody(), userBody({ email: 'bad' }), userBody(), userBody({ age: 151 })];
    for (const payload of [{ users }, users]) {
      const res = await app.inject({ method: 'POST', url: '/users/batch', payload });
      assert.equal(res.statusCode, 422);
      assert.deepEqual(locs(res.json().detail), [['body', 'users', 1, 'email'], ['body', 'users', 3, 'age']]);
    }
  });

  test('one body with three bad fields: three issues; a field breaking two rules: one issue', async () => {
    const res = await app.inject({ method: 'POST', url: '/users', payload: { name: '', email: 'x'.repeat(300), age: 'old' } });
    assert.equal(res.statusCode, 422);
    const detail: Issue[] = res.json().detail;
    assert.deepEqual(detail.map((i) => [i.loc, i.type]), [
      [['body', 'name'], 'string_too_short'], [['body', 'email'], 'string_too_long'], [['body', 'age'], 'int_type'],
    ]);
  });

  test('missing fields are all named', async () => {
    const res = await app.inject({ method: 'POST', url: '/users', payload: {} });
    assert.deepEqual(locs(res.json().detail), [['body', 'name'], ['body', 'email'], ['body', 'age']]);
  });
});
