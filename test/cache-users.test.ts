/**
 * The users cache (src/modules/cache/cached-users.ts) over a real PostgreSQL, one clause of docs/caching.md per
 * test: read-through, one database read per key at a time, bounds, read-your-writes, the classic race (driven
 * step by step with the `afterLoad` hook), a read after a write never joining a load from before it, and the
 * maximum staleness of an instance that hears nothing of a write made elsewhere.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Backend } from '../src/db/backend.ts';
import type { UsersStore } from '../src/db/users-store.ts';
import { localBus } from '../src/platform/bus.ts';
import { createCachedUsers, type CachedUsersOptions, type UsersCache } from '../src/modules/cache/cached-users.ts';
import { MemoryLayer } from '../src/modules/cache/memory-layer.ts';
import { startBackend, type TestBackend } from './support/backends.ts';

/** The backend's store, counting the reads that reach it: the database reads the cache let through. */
function counted(store: UsersStore) {
  const reads = { get: 0, list: 0 };
  const wrapped: UsersStore = {
    create: (...a) => store.create(...a),
    createMany: (...a) => store.createMany(...a),
    get: (...a) => { reads.get++; return store.get(...a); },
    update: (...a) => store.update(...a),
    delete: (...a) => store.delete(...a),
    list: (...a) => { reads.list++; return store.list(...a); },
    stream: (o) => store.stream(o),
  };
  return { reads, store: wrapped };
}

/** A gate a test opens by hand. */
function gate() {
  let open!: () => void;
  const opened = new Promise<void>((r) => { open = r; });
  return { opened, open };
}

/** A user as its JSON, so two reads compare by value (a created user shares one Date for both timestamps). */
const json = (x: unknown) => JSON.parse(JSON.stringify(x)) as unknown;
const person = (n: number) => ({ name: `Cache ${n}`, email: `cache${n}@example.com`, age: 30 });

describe('users cache (memory layer, PostgreSQL)', () => {
  let tb: TestBackend;
  let backend: Backend;
  const caches: UsersCache[] = [];
  const make = (over: Partial<CachedUsersOptions> = {}) => {
    const c = counted(backend.users);
    const cache = createCachedUsers(c.store, { mode: 'memory', ttlMs: 60_000, maxEntries: 1000, maxBytes: 1 << 20, bus: localBus, ...over });
    caches.push(cache);
    return { cache, reads: c.reads, users: cache.users };
  };

  before(async () => {
    tb = await startBackend('postgres');
    backend = await tb.openBackend();
  });
  after(async () => {
    for (const c of caches) c.close();
    await backend?.close();
    await tb?.destroy();
  });

  test('reads through: a second read of a user or a page is served without the database', async () => {
    const { users, reads } = make();
    const u = await users.create(person(1));
    assert.deepEqual(json(await users.get(u.id)), json(u));
    assert.deepEqual(json(await users.get(u.id)), json(u));
    assert.equal(reads.get, 1);
    const p1 = await users.list({ limit: 5 });
    const p2 = await users.list({ limit: 5 });
    assert.equal(p1, p2);
    assert.equal(reads.list, 1);
    assert.equal(await users.get('00000000-0000-4000-8000-000000000000'), null);
  });

  test('one database read per key at a time, whatever the concurrency', async () => {
    const { users, reads } = make();
    const u = await users.create(person(2));
    const got = await Promise.all(Array.from({ length: 200 }, () => users.get(u.id)));
    assert.equal(reads.get, 1);
    for (const g of got) assert.equal(g?.id, u.id);
    await Promise.all(Array.from({ length: 50 }, () => users.list({ limit: 3 })));
    assert.equal(reads.list, 1);
  });

  test('the in-process layer is bounded by entries and by bytes, least recently used first', () => {
    const byCount = new MemoryLayer<string>(2, 1 << 20);
    const later = performance.now() + 60_000;
    byCount.set('a', 'A', 10, later);
    byCount.set('b', 'B', 10, later);
    byCount.get('a');
    byCount.set('c', 'C', 10, later);
    assert.equal(byCount.get('b'), undefined, 'b was the least recently used');
    assert.equal(byCount.get('a'), 'A');
    assert.equal(byCount.stats().evictions, 1);
    const byBytes = new MemoryLayer<string>(100, 25);
    byBytes.set('a', 'A', 10, later);
    byBytes.set('b', 'B', 10, later);
    byBytes.set('c', 'C', 10, later);
    assert.deepEqual([byBytes.stats().entries, byBytes.stats().bytes], [2, 20]);
    byBytes.set('huge', 'H', 26, later);
    assert.equal(byBytes.get('huge'), undefined, 'larger than the whole budget: not stored');
  });

  test('a hit moves its entry back unless it is among the last quarter inserted: it outlives 3/4 of maxEntries insertions', () => {
    const later = performance.now() + 60_000;
    const layer = new MemoryLayer<number>(8, 1 << 20);
    for (let i = 0; i < 8; i++) layer.set(`k${i}`, i, 1, later);
    assert.equal(layer.get('k0'), 0, 'k0 is the oldest: the hit moves it to the back');
    for (let i = 0; i < 6; i++) layer.set(`x${i}`, i, 1, later);
    assert.equal(layer.get('k0'), 0, 'k0 survived 6 insertions after its hit');
    for (let i = 1; i <= 6; i++) assert.equal(layer.get(`k${i}`), undefined, `k${i} was evicted, least recently used`);
    // A hit on an entry among the last quarter (2 of 8) inserted does not move it, and it still outlives 6.
    layer.set('h', 0, 1, later);
    layer.set('y', 0, 1, later);
    assert.equal(layer.get('h'), 0);
    for (let i = 0; i < 6; i++) layer.set(`z${i}`, i, 1, later);
    assert.equal(layer.get('h'), 0, 'six insertions (3/4 of 8) after its hit, h is still there');
  });

  test('admission: a scan of ids read once does not evict the users read often (docs/caching.md, "Admission")', async () => {
    // Eight entries: six for users, two for pages.
    const { users, reads, cache } = make({ maxEntries: 8 });
    const made = await users.createMany(Array.from({ length: 30 }, (_, i) => person(100 + i)));
    const hot = made.slice(0, 6);
    for (const u of [...hot, ...hot]) await users.get(u.id);
    const afterHot = reads.get;
    assert.equal(afterHot, 6, 'the first read of each hot user loads it, the second is a hit');
    for (const u of made.slice(6)) await users.get(u.id);
    assert.equal(reads.get, afterHot + 24, 'every id of the scan misses');
    for (const u of hot) await users.get(u.id);
    assert.equal(reads.get, afterHot + 24, 'the hot users were not evicted by the scan');
    const memory = cache.status().layers.find((l) => l.name === 'memory')!;
    assert.deepEqual([memory.entries, memory.evictions, memory.rejections], [6, 0, 24]);
    // A user of the scan asked for again and again: once asked for more often than the least recently used hot
    // user (three times), it is admitted in its place. Its 2nd and 3rd requests tie or trail: not admitted.
    const again = made[6]!;
    for (let i = 0; i < 4; i++) await users.get(again.id);
    assert.equal(reads.get, afterHot + 24 + 3, 'loaded on its 2nd, 3rd and 4th requests, admitted on the 4th, a hit on the 5th');
    assert.equal(cache.status().layers.find((l) => l.name === 'memory')!.evictions, 1);
  });

  test('read-your-writes: after an update or a delete returns, this instance never serves the old value', async () => {
    const { users } = make();
    const u = await users.create(person(3));
    await users.get(u.id);
    await users.list({ limit: 10000 });
    const changed = await users.update(u.id, { age: 31 });
    assert.equal((await users.get(u.id))?.age, 31);
    assert.equal((await users.list({ limit: 10000 })).items.find((x) => x.id === u.id)?.age, 31);
    assert.deepEqual(json(await users.get(u.id)), json(changed));
    await users.delete(u.id);
    assert.equal(await users.get(u.id), null);
    assert.equal((await users.list({ limit: 10000 })).items.some((x) => x.id === u.id), false);
  });

  test('the classic race: a row loaded before a write committed is not stored after its invalidation', async () => {
    const held = gate();
    const loaded = gate();
    let hold = false;
    const { users } = make({
      afterLoad: async () => {
        if (!hold) return;
        loaded.open();
        await held.opened;
      },
    });
    const u = await users.create(person(4));
    hold = true;
    const slow = users.get(u.id); // reads age 30 from the database, then waits
    await loaded.opened;
    hold = false;
    await users.update(u.id, { age: 44 }); // commits and invalidates while the slow read holds age 30
    held.open();
    assert.equal((await slow)?.age, 30, 'the slow read answers what it read');
    assert.equal((await users.get(u.id))?.age, 44, 'the old row was not stored');

    // The same for a list page.
    const heldPage = gate();
    const loadedPage = gate();
    hold = false;
    const { users: u2 } = make({
      afterLoad: async (key) => {
        if (!key.startsWith('l:') || !hold) return;
        loadedPage.open();
        await heldPage.opened;
      },
    });
    hold = true;
    const slowPage = u2.list({ limit: 10000 });
    await loadedPage.opened;
    hold = false;
    await u2.update(u.id, { age: 45 });
    heldPage.open();
    await slowPage;
    assert.equal((await u2.list({ limit: 10000 })).items.find((x) => x.id === u.id)?.age, 45);
  });

  test('a read that starts after a write never joins a load that started before it', async () => {
    const held = gate();
    const loaded = gate();
    let hold = false;
    const { users } = make({
      afterLoad: async () => {
        if (!hold) return;
        hold = false;
        loaded.open();
        await held.opened;
      },
    });
    const u = await users.create(person(5));
    hold = true;
    const slow = users.get(u.id);
    await loaded.opened;
    await users.delete(u.id); // leaves nothing in the cache: the next read goes to the database
    // Must not wait for, nor share, the slow read from before the delete (which waits until this read is done).
    const fresh = await Promise.race([users.get(u.id), sleep(2000).then(() => 'joined the old load')]);
    assert.equal(fresh, null);
    held.open();
    assert.equal((await slow)?.age, 30);
    assert.equal(await users.get(u.id), null);
  });

  test('maximum staleness: an instance that hears nothing of a write serves the new value within the TTL', async () => {
    const ttlMs = 300;
    const a = make({ ttlMs });
    const b = make({ ttlMs });
    const u = await a.users.create(person(6));
    assert.equal((await b.users.get(u.id))?.age, 30);
    const wroteAt = performance.now();
    await a.users.update(u.id, { age: 66 }); // b shares no bus with a
    let seen = performance.now();
    while ((await b.users.get(u.id))?.age !== 66) {
      await sleep(10);
      seen = performance.now();
      assert.ok(seen - wroteAt < ttlMs + 200, 'still stale past the TTL');
    }
    assert.ok(seen - wroteAt <= ttlMs + 50, `served the new value after ${Math.round(seen - wroteAt)} ms`);
  });
});
