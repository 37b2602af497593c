/**
 * THE storage contract: every behaviour of `UsersRepository` (src/storage/repository.ts), run against a real
 * database by each backend's test file (test/storage-postgres.test.ts, test/storage-cassandra.test.ts).
 *
 * One suite for all backends. Where a backend cannot do something, it is listed in `CANNOT` with the reason, and
 * the suite checks what the backend does instead (listing order; a deadline answered on time without a server-side
 * cancel) and prints the reason as a diagnostic, so nothing is left out silently and nothing is reported skipped.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { AppError } from '../src/errors.ts';
import { CURSOR_TAG, encodeCursor } from '../src/storage/cursor.ts';
import type { DbErrorKind, NewUser, User, UsersRepository } from '../src/storage/repository.ts';
import type { BackendName, TestBackend } from './support/backends.ts';

/** What a backend cannot do, and why. The suite consults this; docs/cassandra.md repeats it for users. */
export const CANNOT: Record<BackendName, Partial<Record<Capability, string>>> = {
  postgres: {},
  cassandra: {
    creationOrder:
      'rows are placed on the ring by the hash (token) of their id, so a scan returns them in token order; a global '
      + 'creation order would need every row in one partition, i.e. one hot replica set. Listings and streams are in '
      + 'token order instead, which is stable and visits every row once (checked below).',
    serverCancel:
      'CQL has no way to cancel a running request: at the deadline the driver stops waiting and the service answers '
      + '504, and the server\'s own timeouts (read 5 s, write 2 s, range 10 s by default) end the request there.',
    isolatedBatch:
      'a logged batch is atomic (all of it is applied, or none) but not isolated: a reader may see some of its rows '
      + 'before the others while it is being applied. Not tested for any backend; listed for users.',
  },
};

export type Capability = 'creationOrder' | 'serverCancel' | 'isolatedBatch';

export interface ContractTarget {
  backend: TestBackend;
  /** PostgreSQL only: how many statements are still running a server-side sleep (to see cancellation). */
  serverSleeps?: () => Promise<number>;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
let seq = 0;
const newUser = (over: Partial<NewUser> = {}): NewUser => ({ name: `Contract ${++seq}`, email: `c${seq}@example.com`, age: 30, ...over });

/**
 * The same user, field by field; timestamps compared as instants (an adapter may return a subclass of Date, e.g.
 * one that keeps its ISO text).
 */
function sameUser(actual: User | null, expected: User | null, message?: string): void {
  const plain = (u: User | null) => u && { ...u, created_at: u.created_at.getTime(), updated_at: u.updated_at.getTime() };
  assert.ok(actual === null || (actual.created_at instanceof Date && actual.updated_at instanceof Date), 'timestamps are Dates');
  assert.deepEqual(plain(actual), plain(expected), message);
}

/** Rejects with an `AppError` whose catalogue code is `code`. */
async function rejectsWith(p: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof AppError, `expected an AppError, got ${String(err)}`);
    assert.equal(err.code, code);
    return true;
  });
}

async function walk(repo: UsersRepository, limit: number): Promise<{ ids: string[]; pages: number[] }> {
  const ids: string[] = [];
  const pages: number[] = [];
  let cursor: string | undefined;
  do {
    const page = await repo.list({ limit, cursor });
    pages.push(page.items.length);
    ids.push(...page.items.map((u) => u.id));
    cursor = page.nextCursor ?? undefined;
  } while (cursor);
  return { ids, pages };
}

async function pagesOf(stream: AsyncIterable<User[]>): Promise<User[][]> {
  const pages: User[][] = [];
  for await (const page of stream) pages.push(page);
  return pages;
}

/**
 * Registers the contract suite for one backend. `setup` starts the backend (once for the file); the suite opens
 * its repositories on it and tears everything down at the end.
 */
export function storageContract(name: BackendName, setup: () => Promise<ContractTarget>, skip: string | false = false): void {
  const cannot = CANNOT[name];

  describe(`storage contract: ${name}`, { skip }, () => {
    let target: ContractTarget;
    let repo: UsersRepository;
    const observed: { seconds: number; kind: DbErrorKind | undefined }[] = [];

    before(async () => {
      target = await setup();
      repo = await target.backend.openRepository({ onQuery: (seconds, kind) => observed.push({ seconds, kind }) });
    });
    after(async () => {
      await repo?.close();
      await target?.backend.destroy();
    });

    test('lists what this backend cannot do, with the reason', (t) => {
      for (const [capability, reason] of Object.entries(cannot)) t.diagnostic(`${capability}: ${reason}`);
      if (Object.keys(cannot).length === 0) t.diagnostic('nothing: this backend does everything the contract describes');
    });

    test('ping and schemaReady answer when the database is up', async () => {
      await repo.ping();
      assert.equal(await repo.schemaReady(), true);
      assert.equal(repo.backend, name);
    });

    describe('create and get', () => {
      test('create stamps a lowercase UUID and equal ms-precision timestamps; get returns the same user', async () => {
        const before = Date.now();
        const user = await repo.create(newUser({ name: 'Ada', email: 'ada@example.com', age: 36 }));
        assert.match(user.id, UUID);
        assert.deepEqual([user.name, user.email, user.age], ['Ada', 'ada@example.com', 36]);
        assert.ok(user.created_at instanceof Date);
        assert.equal(user.created_at.getTime(), user.updated_at.getTime());
        assert.ok(user.created_at.getTime() >= before - 5 && user.created_at.getTime() <= Date.now() + 5);
        sameUser(await repo.get(user.id), user);
      });

      test('get of an absent id is null', async () => {
        assert.equal(await repo.get('0190a3c4-0000-7000-8000-00000000abcd'), null);
      });

      test('input the database domain refuses (NUL, out-of-range age) is badInput, and nothing is stored', async () => {
        const before = await target.backend.countUsers();
        await rejectsWith(repo.create(newUser({ name: 'a\u0000b' })), 'BAD_INPUT');
        await rejectsWith(repo.create(newUser({ age: 151 })), 'BAD_INPUT');
        assert.equal(await target.backend.countUsers(), before);
      });

      test('50 concurrent creates are all stored and readable', async () => {
        const users = await Promise.all(Array.from({ length: 50 }, (_, i) => repo.create(newUser({ age: i }))));
        assert.equal(new Set(users.map((u) => u.id)).size, 50);
        for (const u of users) sameUser(await repo.get(u.id), u);
      });
    });

    describe('update', () => {
      test('changes only the fields present; updated_at later than before and than created_at by >= 1 ms', async () => {
        const user = await repo.create(newUser({ age: 20 }));
        const updated = await repo.update(user.id, { age: 21 });
        assert.ok(updated);
        assert.deepEqual([updated.name, updated.email, updated.age], [user.name, user.email, 21]);
        assert.equal(updated.created_at.getTime(), user.created_at.getTime());
        assert.ok(updated.updated_at.getTime() >= user.updated_at.getTime() + 1);
        sameUser(await repo.get(user.id), updated);
        const all = await repo.update(user.id, { name: 'New', email: 'new@example.com', age: 99 });
        assert.deepEqual([all?.name, all?.email, all?.age], ['New', 'new@example.com', 99]);
        sameUser(await repo.get(user.id), all);
      });

      test('updated_at strictly increases across rapid updates', async () => {
        const user = await repo.create(newUser());
        let last = user.updated_at.getTime();
        for (let i = 0; i < 5; i++) {
          const u = await repo.update(user.id, { age: 40 + i });
          assert.ok(u && u.updated_at.getTime() >= last + 1, `update ${i}`);
          last = u.updated_at.getTime();
        }
      });

      test('concurrent updates of one user all succeed, and the last one read back is one of them', async () => {
        const user = await repo.create(newUser());
        const results = await Promise.all([1, 2, 3].map((age) => repo.update(user.id, { age })));
        for (const r of results) assert.ok(r && r.updated_at > user.updated_at);
        const final = await repo.get(user.id);
        assert.ok(final && [1, 2, 3].includes(final.age));
        assert.equal(final.updated_at.getTime(), Math.max(...results.map((r) => r!.updated_at.getTime())));
      });

      test('update of an absent or deleted user is null, and does not bring it back', async () => {
        assert.equal(await repo.update('0190a3c4-0000-7000-8000-00000000abce', { age: 3 }), null);
        const user = await repo.create(newUser());
        await repo.delete(user.id);
        assert.equal(await repo.update(user.id, { age: 3 }), null);
        assert.equal(await repo.get(user.id), null);
        assert.equal(await target.backend.userExists(user.id), false);
      });

      test('a refused value is badInput and changes nothing', async () => {
        const user = await repo.create(newUser());
        await rejectsWith(repo.update(user.id, { name: 'x\u0000' }), 'BAD_INPUT');
        sameUser(await repo.get(user.id), user);
      });
    });

    describe('delete', () => {
      test('is idempotent: deleting twice, or an id that never existed, is fine', async () => {
        const user = await repo.create(newUser());
        await repo.delete(user.id);
        assert.equal(await repo.get(user.id), null);
        await repo.delete(user.id);
        await repo.delete('0190a3c4-0000-7000-8000-00000000abcf');
      });
    });

    describe('list', () => {
      test('following nextCursor visits every row exactly once, whatever the page size', async () => {
        for (let i = 0; i < 23; i++) await repo.create(newUser());
        const all = new Set(await target.backend.allIds());
        for (const limit of [1, 5, 7, 10_000]) {
          const { ids, pages } = await walk(repo, limit);
          assert.equal(new Set(ids).size, ids.length, `limit ${limit}: no row twice`);
          assert.deepEqual(new Set(ids), all, `limit ${limit}: every row`);
          assert.ok(pages.slice(0, -1).every((n) => n === limit), `limit ${limit}: full pages until the last`);
          assert.ok(pages.at(-1)! > 0, `limit ${limit}: no empty last page`);
        }
      });

      test('no cursor when the last page is exactly full', async () => {
        const total = await target.backend.countUsers();
        const page = await repo.list({ limit: total });
        assert.equal(page.items.length, total);
        assert.equal(page.nextCursor, null);
      });

      test('the order is stable: two walks give the same sequence', async () => {
        assert.deepEqual((await walk(repo, 6)).ids, (await walk(repo, 11)).ids);
      });

      if (!cannot.creationOrder) {
        test('rows come in creation (id) order', async () => {
          const { ids } = await walk(repo, 8);
          assert.deepEqual(ids, [...ids].sort());
        });
      }

      if (cannot.creationOrder) {
        test(`rows come in this backend's own stable order instead (${name}: token order)`, async () => {
          const { ids } = await walk(repo, 8);
          assert.deepEqual(ids, await target.backend.listingOrder(ids));
        });
      }

      test('rows inserted during a walk do not make it skip or repeat a pre-existing row', async () => {
        const existing = new Set(await target.backend.allIds());
        const seen: string[] = [];
        let cursor: string | undefined;
        do {
          await repo.create(newUser());
          const page = await repo.list({ limit: 4, cursor });
          seen.push(...page.items.map((u) => u.id));
          cursor = page.nextCursor ?? undefined;
        } while (cursor);
        assert.equal(new Set(seen).size, seen.length);
        for (const id of existing) assert.ok(seen.includes(id), `row ${id} visited`);
      });

      test('a cursor that is not one of ours is invalidCursor', async () => {
        const valid = (await repo.list({ limit: 1 })).nextCursor!;
        assert.ok(valid);
        const raw = Buffer.from(valid, 'base64url');
        const otherTag = name === 'postgres' ? CURSOR_TAG.cassandra : CURSOR_TAG.postgres;
        for (const bad of [
          'garbage!', 'AAAA', 'AQ', `${valid}=`,
          encodeCursor(otherTag, raw.subarray(1)),
          raw.subarray(0, raw.length - 1).toString('base64url'),
        ]) {
          await rejectsWith(repo.list({ limit: 5, cursor: bad }), 'INVALID_CURSOR');
        }
      });
    });

    describe('stream', () => {
      test('pages of fetchSize rows, the last one shorter; limit honoured; limit 0 yields nothing', async () => {
        const total = await target.backend.countUsers();
        assert.ok(total > 30, 'enough rows from earlier tests');
        assert.deepEqual((await pagesOf(repo.stream({ limit: 25, fetchSize: 10 }))).map((p) => p.length), [10, 10, 5]);
        assert.deepEqual((await pagesOf(repo.stream({ limit: 0, fetchSize: 10 }))).length, 0);
        const all = await pagesOf(repo.stream({ limit: 1_000_000, fetchSize: 10 }));
        const sizes = all.map((p) => p.length);
        assert.ok(sizes.slice(0, -1).every((n) => n === 10) && sizes.at(-1)! >= 1 && sizes.at(-1)! <= 10, String(sizes));
        const ids = all.flat().map((u) => u.id);
        assert.equal(ids.length, total);
        assert.equal(new Set(ids).size, total);
        assert.deepEqual(ids, (await walk(repo, 10_000)).ids, 'the same order as list');
      });

      test('a consumer that stops early releases everything, and the repository goes on working', async () => {
        for await (const page of repo.stream({ limit: 1_000_000, fetchSize: 10 })) {
          assert.equal(page.length, 10);
          break;
        }
        const controller = new AbortController();
        const pages: number[] = [];
        for await (const page of repo.stream({ limit: 1_000_000, fetchSize: 10, signal: controller.signal })) {
          pages.push(page.length);
          controller.abort();
        }
        assert.deepEqual(pages, [10], 'nothing more after the signal');
        for (let i = 0; i < 50 && repo.poolStats().active > 0; i++) await sleep(20);
        assert.equal(repo.poolStats().active, 0);
        assert.ok(await repo.list({ limit: 1 }));
      });
    });

    describe('createMany', () => {
      test('stores every user with the same timestamps', async () => {
        const users = await repo.createMany([newUser(), newUser(), newUser()]);
        assert.equal(users.length, 3);
        assert.ok(users.every((u) => u.created_at.getTime() === users[0]!.created_at.getTime()));
        for (const u of users) sameUser(await repo.get(u.id), u);
      });

      test('all or nothing: one refused item stores none of them', async () => {
        const before = await target.backend.countUsers();
        await rejectsWith(repo.createMany([newUser(), newUser(), newUser({ name: 'bad\u0000' }), newUser()]), 'BAD_INPUT');
        assert.equal(await target.backend.countUsers(), before);
      });
    });

    describe('deadlines', () => {
      test('a deadline already past is timeout, for reads and writes alike', async () => {
        const past = { deadline: performance.now() - 1 };
        const before = await target.backend.countUsers();
        await rejectsWith(repo.get('0190a3c4-0000-7000-8000-00000000abcd', past), 'TIMEOUT');
        await rejectsWith(repo.create(newUser(), past), 'TIMEOUT');
        await rejectsWith(repo.list({ limit: 5 }, past), 'TIMEOUT');
        assert.equal(await target.backend.countUsers(), before);
      });

      test('sleep lasts its time, and stops with timeout at an earlier deadline; onQuery reports the kind', async () => {
        let t0 = performance.now();
        await repo.sleep(0.3);
        const slept = performance.now() - t0;
        assert.ok(slept >= 290 && slept < 2000, `slept ${slept} ms`);
        const from = observed.length;
        t0 = performance.now();
        await rejectsWith(repo.sleep(5, { deadline: t0 + 300 }), 'TIMEOUT');
        const waited = performance.now() - t0;
        assert.ok(waited >= 280 && waited < 1500, `answered after ${waited} ms`);
        for (let i = 0; i < 100 && !observed.slice(from).some((o) => o.kind === 'timeout'); i++) await sleep(20);
        assert.ok(observed.slice(from).some((o) => o.kind === 'timeout'), 'the timed-out call is observed as a timeout');
        assert.ok(observed.some((o) => o.kind === undefined && o.seconds >= 0), 'successful calls are observed too');
      });

      if (!cannot.serverCancel) {
        test('the database work is cancelled on the server at the deadline', async () => {
          assert.ok(target.serverSleeps, 'the target can see server-side work');
          await rejectsWith(repo.sleep(5, { deadline: performance.now() + 200 }), 'TIMEOUT');
          let running = await target.serverSleeps();
          for (let i = 0; i < 50 && running > 0; i++) {
            await sleep(20);
            running = await target.serverSleeps();
          }
          assert.equal(running, 0);
        });
      }
    });

    describe('pool figures', () => {
      test('poolStats reports sane numbers', () => {
        const s = repo.poolStats();
        for (const v of [s.active, s.idle, s.waiting, s.max]) assert.ok(Number.isInteger(v) && v >= 0);
        assert.ok(s.max > 0);
        assert.ok(s.active + s.idle <= s.max || name === 'cassandra');
      });
    });

    // Last: it stops the database server.
    describe('outage', () => {
      test('database down: unavailable (503) fast, reported as such; back up: recovers without reopening', async () => {
        const user = await repo.create(newUser());
        await target.backend.stopDatabase();
        const from = observed.length;
        const t0 = performance.now();
        await rejectsWith(repo.get(user.id), 'DB_UNAVAILABLE');
        await rejectsWith(repo.create(newUser()), 'DB_UNAVAILABLE');
        assert.ok(performance.now() - t0 < 3000, `answered in ${performance.now() - t0} ms`);
        assert.ok(observed.slice(from).some((o) => o.kind === 'unavailable'));
        await assert.rejects(repo.ping());
        assert.equal(await repo.schemaReady().catch(() => false), false);

        await target.backend.startDatabase();
        const t1 = performance.now();
        let back: User | null = null;
        while (back === null && performance.now() - t1 < 30_000) {
          back = await repo.get(user.id).catch(() => null);
          if (back === null) await sleep(100);
        }
        sameUser(back, user, 'the user written before the outage is there');
        await repo.ping();
        assert.equal(await repo.schemaReady(), true);
        assert.ok(await repo.create(newUser()));
      });
    });
  });
}
