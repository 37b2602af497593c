/**
 * The user field rules have one home, src/db/user-fields.ts (issue 10, part 5). The SQL migration cannot import
 * it, so this file asserts, against a real PostgreSQL, that the CHECK constraints of 0001_users.sql accept and
 * refuse exactly what the constants (`invalidFields`, which the Cassandra adapter enforces) accept and refuse at
 * every boundary; and that the request schemas are built from the same constants.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import postgres from 'postgres';
import {
  AGE_MAX, AGE_MIN, EMAIL_LABEL_MAX, EMAIL_LOCAL_MAX, EMAIL_MAX, EMAIL_MIN, NAME_MAX, NAME_MIN, NAME_RAW_MAX, invalidFields, isEmail,
} from '../src/db/user-fields.ts';
import { UserCreate } from '../src/modules/users/user-schemas.ts';
import { startApp } from './support/app.ts';
import { createTestDatabase, type TestDatabase } from './support/postgres.ts';

let db: TestDatabase;
let app: FastifyInstance;
let sql: postgres.Sql;

before(async () => {
  db = await createTestDatabase();
  app = await startApp(db.url); // applies the migrations
  sql = postgres(db.url, { max: 1, onnotice: () => {} });
});
after(async () => {
  await sql?.end();
  await app?.close();
  await db?.destroy();
});

type Fields = { name: string; email: string; age: number };
const VALID: Fields = { name: 'Ada', email: 'ada@example.com', age: 36 };

/** Whether PostgreSQL stores the row (inserted directly, past every check of the application). */
async function databaseAccepts(f: Fields): Promise<boolean> {
  try {
    await sql`INSERT INTO users (id, name, email, age, created_at, updated_at)
              VALUES (${randomUUID()}, ${f.name}, ${f.email}, ${f.age}, now(), now())`;
    return true;
  } catch (err) {
    assert.ok(err instanceof postgres.PostgresError, String(err));
    return false;
  }
}

/** A syntactically valid address of exactly `length` characters (a 64-character local part, 63-character labels). */
function emailOf(length: number): string {
  const domain = length - EMAIL_LOCAL_MAX - 1;
  const full = Math.floor((domain - 2) / (EMAIL_LABEL_MAX + 1));
  return `${'a'.repeat(EMAIL_LOCAL_MAX)}@${`${'b'.repeat(EMAIL_LABEL_MAX)}.`.repeat(full)}${'c'.repeat(domain - full * (EMAIL_LABEL_MAX + 1))}`;
}

describe('the database constraints agree with src/db/user-fields.ts', () => {
  const boundaries: [string, Partial<Fields>][] = [
    ['name empty', { name: '' }],
    [`name of ${NAME_MIN}`, { name: 'x'.repeat(NAME_MIN) }],
    [`name of ${NAME_MAX}`, { name: 'x'.repeat(NAME_MAX) }],
    [`name of ${NAME_MAX + 1}`, { name: 'x'.repeat(NAME_MAX + 1) }],
    [`name of ${NAME_MAX} two-byte characters`, { name: 'é'.repeat(NAME_MAX) }],
    [`name of ${NAME_MAX} astral characters`, { name: '😀'.repeat(NAME_MAX) }],
    [`name of ${NAME_MAX + 1} two-byte characters`, { name: 'é'.repeat(NAME_MAX + 1) }],
    ['name with NUL', { name: 'a\u0000b' }],
    [`email of ${EMAIL_MIN - 1}`, { email: 'a'.repeat(EMAIL_MIN - 1) }],
    [`email of ${EMAIL_MIN}`, { email: 'a'.repeat(EMAIL_MIN) }],
    [`email of ${EMAIL_MAX}`, { email: 'a'.repeat(EMAIL_MAX) }],
    [`email of ${EMAIL_MAX + 1}`, { email: 'a'.repeat(EMAIL_MAX + 1) }],
    ['email with NUL', { email: 'a\u0000b@example.com' }],
    [`age ${AGE_MIN - 1}`, { age: AGE_MIN - 1 }],
    [`age ${AGE_MIN}`, { age: AGE_MIN }],
    [`age ${AGE_MAX}`, { age: AGE_MAX }],
    [`age ${AGE_MAX + 1}`, { age: AGE_MAX + 1 }],
  ];
  for (const [label, override] of boundaries) {
    test(label, async () => {
      const row = { ...VALID, ...override };
      const byConstants = invalidFields(row).length === 0;
      assert.equal(await databaseAccepts(row), byConstants, `database and constants disagree on ${label}`);
    });
  }

  test('the boundaries above include both outcomes for every field', async () => {
    const outcomes = boundaries.map(([label, o]) => [label.split(' ')[0], invalidFields({ ...VALID, ...o }).length === 0]);
    for (const field of ['name', 'email', 'age']) {
      const mine = outcomes.filter(([f]) => f === field).map(([, ok]) => ok);
      assert.ok(mine.includes(true) && mine.includes(false), field);
    }
  });
});

describe('the request schemas are built from the same constants', () => {
  test('UserCreate states the bounds', () => {
    const p = UserCreate.properties as unknown as Record<'name' | 'email' | 'age', Record<string, unknown>>;
    assert.deepEqual(
      [p.name.minLength, p.name.maxLength, p.email.maxLength, p.age.minimum, p.age.maximum],
      [NAME_MIN, NAME_RAW_MAX, EMAIL_MAX, AGE_MIN, AGE_MAX],
    );
  });

  test('the API accepts and refuses at the same boundaries (a name counted after trimming)', async () => {
    const post = (f: Partial<Fields>) => app.inject({ method: 'POST', url: '/users', payload: { ...VALID, ...f } });
    const cases: [Partial<Fields>, number][] = [
      [{ name: ` ${'x'.repeat(NAME_MAX)} ` }, 201],
      [{ name: 'é'.repeat(NAME_MAX) }, 201],
      [{ name: 'x'.repeat(NAME_MAX + 1) }, 422],
      [{ email: emailOf(EMAIL_MAX) }, 201],
      [{ email: emailOf(EMAIL_MAX + 1) }, 422],
      [{ age: AGE_MIN }, 201], [{ age: AGE_MAX }, 201], [{ age: AGE_MIN - 1 }, 422], [{ age: AGE_MAX + 1 }, 422],
    ];
    assert.equal(emailOf(EMAIL_MAX).length, EMAIL_MAX);
    assert.ok(isEmail(emailOf(EMAIL_MAX)));
    for (const [f, status] of cases) {
      const res = await post(f);
      assert.equal(res.statusCode, status, `${JSON.stringify(f).slice(0, 80)}: ${res.body.slice(0, 200)}`);
    }
  });
});
