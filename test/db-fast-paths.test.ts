/**
 * The fast paths of the database layer, which must change nothing but speed: request coalescing
 * (src/platform/lib/coalesce.ts) on its own and as the PostgreSQL users adapter uses it (concurrent reads by id and
 * concurrent creates share statements, results reach the right callers, a row the database refuses fails only
 * the request that sent it), and the timestamptz reader (src/platform/lib/pg-timestamp.ts), which must agree with
 * `new Date(text)` on every input.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import postgres from 'postgres';
import { isAppError } from '../src/platform/errors.ts';
import { coalesce, singleFlight } from '../src/platform/lib/coalesce.ts';
import { isoString, parseTimestamptz } from '../src/platform/lib/pg-timestamp.ts';
import { createDb, type Db } from '../src/db/postgres/db.ts';
import { migrate } from '../src/db/postgres/migrate.ts';
import { createPostgresUsersStore } from '../src/db/postgres/users.ts';
import type { UsersStore } from '../src/db/users-store.ts';
import { createTestDatabase, type TestDatabase } from './support/postgres.ts';

describe('coalesce', () => {
  test('lookups made together are loaded by one call; each caller gets its own value, a missing key undefined', async () => {
    const calls: string[][] = [];
    const load = coalesce<string, number>(async (take) => {
      const keys = take();
      calls.push(keys);
      return new Map(keys.filter((k) => k !== 'missing').map((k) => [k, k.length]));
    }, 100);
    const got = await Promise.all(['a', 'bb', 'missing', 'ccc', 'bb'].map(load));
    assert.deepEqual(got, [1, 2, undefined, 3, 2]);
    assert.deepEqual(calls, [['a', 'bb', 'missing', 'ccc', 'bb']]);
  });

  test('batches hold at most maxBatch keys; the rest go in the next ones', async () => {
    const sizes: number[] = [];
    const load = coalesce<number, number>(async (take) => {
      const keys = take();
      sizes.push(keys.length);
      return new Map(keys.map((k) => [k, k * 2]));
    }, 4);
    assert.deepEqual(await Promise.all(Array.from({ length: 10 }, (_, i) => load(i))), [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]);
    assert.deepEqual(sizes, [4, 4, 2]);
  });

  test('lookups made while a batch waits join it: keys are taken only when the loader is ready', async () => {
    let ready!: () => void;
    const gate = new Promise<void>((r) => (ready = r));
    const calls: number[][] = [];
    const load = coalesce<number, number>(async (take) => {
      await gate;
      const keys = take();
      calls.push(keys);
      return new Map(keys.map((k) => [k, k]));
    }, 100);
    const first = load(1);
    await new Promise((r) => setImmediate(r));
    const later = [load(2), load(3)];
    ready();
    assert.deepEqual(await Promise.all([first, ...later]), [1, 2, 3]);
    assert.deepEqual(calls, [[1, 2, 3]]);
  });

  test('a failure fails its batch only; the next lookups load normally', async () => {
    let fail = true;
    const load = coalesce<number, number>(async (take) => {
      const keys = take();
      if (fail) throw new Error('boom');
      return new Map(keys.map((k) => [k, k]));
    }, 100);
    const failed = await Promise.allSettled([load(1), load(2)]);
    assert.deepEqual(failed.map((r) => r.status), ['rejected', 'rejected']);
    fail = false;
    assert.equal(await load(3), 3);
  });

  test('a loader that fails before taking its batch fails every lookup waiting for it', async () => {
    let attempt = 0;
    const load = coalesce<number, number>(async (take) => {
      if (attempt++ === 0) {
        await new Promise((r) => setTimeout(r, 10));
        throw new Error('no connection free');
      }
      const keys = take();
      return new Map(keys.map((k) => [k, k]));
    }, 100);
    const first = load(1);
    await new Promise((r) => setImmediate(r));
    const joined = load(2);
    const results = await Promise.allSettled([first, joined]);
    assert.deepEqual(results.map((r) => r.status), ['rejected', 'rejected']);
    assert.equal(await load(4), 4);
  });
});

describe('singleFlight', () => {
  const tick = () => new Promise((r) => setImmediate(r));

  test('calls with one key made before the read is sent share it; other keys read on their own', async () => {
    const reads: string[] = [];
    const read = singleFlight<string, { v: string }>(async (args, sent) => {
      sent();
      reads.push(args);
      return { v: args };
    });
    const got = await Promise.all([read('a', 'a'), read('a', 'a'), read('b', 'b'), read('a', 'a')]);
    assert.deepEqual(reads.sort(), ['a', 'b']);
    assert.equal(got[0], got[1], 'joiners get the very same result');
    assert.equal(got[0], got[3]);
    assert.equal(got[2]!.v, 'b');
  });

  test('a call made after the read was sent never gets its result: it reads again', async () => {
    let version = 0;
    let release!: () => void;
    const slow = new Promise<void>((r) => (release = r));
    const read = singleFlight<null, number>(async (_args, sent) => {
      sent();
      const seen = version;
      await slow;
      return seen;
    });
    const first = read('k', null);
    await tick(); // the first read is sent and sees version 0
    version = 1; // a write acknowledged now must be visible to every later read
    const second = read('k', null);
    release();
    assert.deepEqual(await Promise.all([first, second]), [0, 1]);
  });

  test('a failure reaches every caller that joined it, and the next call reads afresh', async () => {
    let fail = true;
    const read = singleFlight<null, string>(async (_args, sent) => {
      await tick();
      if (fail) throw new Error('no connection free');
      sent();
      return 'ok';
    });
    const results = await Promise.allSettled([read('k', null), read('k', null)]);
    assert.deepEqual(results.map((r) => r.status), ['rejected', 'rejected']);
    fail = false;
    assert.equal(await read('k', null), 'ok');
  });
});

describe('parseTimestamptz', () => {
  const iso = (d: Date) => (Number.isNaN(d.getTime()) ? 'Invalid Date' : d.toISOString());

  test('agrees with new Date(text) on every form PostgreSQL may send, and on nonsense', () => {
    const texts = [
      '2026-11-22 03:42:26.281+00', '2026-11-22 03:42:26.2+00', '2026-11-22 03:42:26.28+00', '2026-11-22 03:42:26+00',
      '2026-11-22 03:42:26.281937+00', '2026-11-22 03:42:26.2819+00', '1999-12-31 23:59:59.999999+00',
      '2024-02-29 12:00:00+00', '2023-02-29 12:00:00+00', '2026-04-31 00:00:00+00', '0100-01-01 00:00:00+00',
      '0099-06-01 00:00:00+00', '9999-12-31 23:59:59.999+00', '10000-01-01 00:00:00+00', '0044-03-15 12:00:00+00 BC',
      '2026-11-22 03:42:26.28+01', '2026-11-22 03:42:26-05', 'infinity', '-infinity', '2026-13-01 00:00:00+00',
      '2026-11-22 24:00:00+00', '2026-11-22 23:60:00+00', '2026-11-22 23:59:60+00', '2026-11-22T03:42:26.281+00',
      '2026-11-22 03:42:26.+00', '2026-1a-22 03:42:26+00', '',
    ];
    for (const text of texts) {
      const ours = parseTimestamptz(text);
      const theirs = new Date(text);
      assert.ok(ours instanceof Date, text);
      assert.equal(iso(ours), iso(theirs), text);
      assert.equal(JSON.stringify({ t: ours }), JSON.stringify({ t: theirs }), text);
    }
  });

  test('its dates write the same ISO text as Date, from 1970 to 9999, and leave other times to Date', () => {
    const times = [0, 1, 999, 86_399_999, 951_782_400_000, 1_709_164_800_000, 4_107_542_400_000, 253_402_300_799_999];
    for (let i = 0; i < 20_000; i++) times.push(Math.floor(Math.random() * 253_402_300_800_000));
    for (const t of times) assert.equal(isoString(t), new Date(t).toISOString(), String(t));
    for (const t of [-1, -62_135_596_800_000, 253_402_300_800_000, NaN]) assert.equal(isoString(t), undefined, String(t));
    const invalid = parseTimestamptz('2026-11-22 03:42:26+00');
    invalid.setTime(NaN);
    assert.throws(() => invalid.toISOString(), RangeError);
  });

  test('a parsed date that is changed formats its new value', () => {
    const d = parseTimestamptz('2026-11-22 03:42:26.281+00');
    d.setTime(0);
    assert.equal(d.toISOString(), '1970-01-01T00:00:00.000Z');
  });

  test('through the pool: stored timestamps read back equal to what was written, to the millisecond', async () => {
    const tdb = await createTestDatabase();
    const pool = createDb({ url: tdb.url, max: 1, acquireTimeoutMs: 2000, statementTimeoutMs: 10_000 });
    try {
      const rows = await pool.query((sql) => sql<{ a: Date; b: Date; c: Date; d: Date }[]>`SELECT
        '2026-11-22 03:42:26.281937+00'::timestamptz AS a, '2001-02-03 04:05:06+00'::timestamptz AS b,
        '1999-12-31 23:59:59.9+05'::timestamptz AS c, 'infinity'::timestamptz AS d`);
      const r = rows[0]!;
      assert.equal(r.a.toISOString(), '2026-11-22T03:42:26.281Z');
      assert.equal(r.b.toISOString(), '2001-02-03T04:05:06.000Z');
      assert.equal(r.c.toISOString(), '1999-12-31T18:59:59.900Z');
      assert.ok(Number.isNaN(r.d.getTime()));
      const now = new Date();
      const [back] = await pool.query((sql) => sql<{ t: Date }[]>`SELECT ${now}::timestamptz AS t`);
      assert.equal(back!.t.getTime(), now.getTime());
    } finally {
      await pool.close();
      await tdb.destroy();
    }
  });
});

describe('coalescing in the PostgreSQL users adapter', () => {
  let db: TestDatabase;
  let repo: UsersStore;
  let pool: Db;
  let sql: postgres.Sql;
  let statements = 0;

  before(async () => {
    db = await createTestDatabase();
    pool = createDb({ url: db.url, max: 4, acquireTimeoutMs: 2000, statementTimeoutMs: 10_000, onQuery: () => void statements++ });
    await migrate(pool.sql);
    repo = createPostgresUsersStore(pool, { idempotencyTtlS: 86_400 });
    sql = postgres(db.url, { max: 1, onnotice: () => {} });
  });
  after(async () => {
    await pool?.close();
    await sql?.end();
    await db?.destroy();
  });

  const input = (i: number, name = `User ${i}`) => ({ name, email: `u${i}@example.com`, age: i % 100 });

  test('concurrent creates share statements and each is stored and answered with its own row', async () => {
    const before = statements;
    const created = await Promise.all(Array.from({ length: 60 }, (_, i) => repo.create(input(i))));
    assert.ok(statements - before < 60, `60 creates took ${statements - before} statements`);
    assert.deepEqual(created.map((u) => u.name), Array.from({ length: 60 }, (_, i) => `User ${i}`));
    const stored = await sql<{ id: string; name: string; created_at: Date }[]>`SELECT id, name, created_at FROM users WHERE id = ANY(${created.map((u) => u.id)}::uuid[])`;
    assert.equal(stored.length, 60);
    const byId = new Map(stored.map((r) => [r.id, r]));
    for (const u of created) {
      assert.equal(byId.get(u.id)!.name, u.name);
      assert.equal(byId.get(u.id)!.created_at.getTime(), u.created_at.getTime());
    }
  });

  test('concurrent reads by id share statements; each caller gets its row, an unknown id null', async () => {
    const users = await Promise.all(Array.from({ length: 20 }, (_, i) => repo.create(input(100 + i))));
    const unknown = '00000000-0000-7000-8000-000000000000';
    const before = statements;
    const got = await Promise.all([...users.map((u) => repo.get(u.id)), repo.get(unknown), repo.get(users[3]!.id)]);
    assert.ok(statements - before < 22, `22 reads took ${statements - before} statements`);
    assert.deepEqual(got.slice(0, 20).map((u) => u?.id), users.map((u) => u.id));
    assert.equal(got[20], null);
    assert.equal(got[21]?.id, users[3]!.id);
    // Any case in, and a read with its own deadline, go alone and still find the row.
    assert.equal((await repo.get(users[0]!.id.toUpperCase()))?.id, users[0]!.id);
    assert.equal((await repo.get(users[1]!.id, { deadline: performance.now() + 5000 }))?.id, users[1]!.id);
  });

  test('concurrent identical list requests share one statement; a later one sees rows written since', async () => {
    const before = statements;
    const pages = await Promise.all(Array.from({ length: 10 }, () => repo.list({ limit: 5 })));
    assert.equal(statements - before, 1, 'ten identical first pages, one statement');
    for (const p of pages) assert.deepEqual(p, pages[0]);
    const [other, alone] = await Promise.all([repo.list({ limit: 3 }), repo.list({ limit: 5 }, { deadline: performance.now() + 5000 })]);
    assert.equal(other.items.length, 3);
    assert.deepEqual(alone, pages[0], 'a request with its own deadline reads alone, with the same result');
    await sql`DELETE FROM users WHERE id = ${pages[0]!.items[0]!.id}`;
    const after = await repo.list({ limit: 5 });
    assert.notEqual(after.items[0]!.id, pages[0]!.items[0]!.id, 'a list asked for after a delete does not show the row');
  });

  test('a row the database refuses fails only its own request; the others in its batch are stored', async () => {
    const results = await Promise.allSettled(Array.from({ length: 30 }, (_, i) => repo.create(input(200 + i, i === 7 ? 'bad\u0000name' : `Fine ${i}`))));
    const rejected = results.flatMap((r, i) => (r.status === 'rejected' ? [i] : []));
    assert.deepEqual(rejected, [7]);
    const reason = (results[7] as PromiseRejectedResult).reason;
    assert.ok(isAppError(reason) && reason.kind === 'bad_input', String(reason));
    const ids = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value.id] : []));
    const [row] = await sql<{ n: number }[]>`SELECT count(*)::int AS n FROM users WHERE id = ANY(${ids}::uuid[])`;
    assert.equal(row?.n, 29);
  });
});
