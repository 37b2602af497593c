/**
 * The users cache: a decorator of `UsersStore` that reads users by id and list pages through an in-process layer
 * and, when given one, a shared Redis layer. docs/caching.md states the guarantee; this file keeps it:
 *
 * - Every invalidation (a write here, a message from another instance, a clear) takes a number from one
 *   sequence. A load remembers the sequence when it starts and stores nothing if its key was invalidated
 *   since, so a read that loaded a row before a write cannot put it back after the write's invalidation. A
 *   key's highest version seen (`updated_at`, or "deleted") is kept beside it for a while, and nothing older
 *   is ever stored or taken from Redis. List pages in Redis belong to a lists generation that every write
 *   replaces (after it committed, before it is published), and a page is stored only under the generation read
 *   before its database read (src/modules/cache/redis-layer.ts).
 * - Concurrent reads of a key share one load (one database read per key at a time), except across an
 *   invalidation: a read that starts after it never joins a load that started before it.
 * - Nothing lives longer than the TTL counted from the moment it was read from the database.
 * - While the bus may be missing messages the cache is bypassed; when it returns everything local is dropped.
 */
import type { CallOptions, ChangeOptions, NewUser, Page, User, UserPatch, UsersStore } from '../../db/users-store.ts';
import type { InvalidationBus } from '../../platform/bus.ts';
import { bytesOfPage, decodePage, decodeUser, encodePage, encodeUser, userBytes } from './codec.ts';
import type { CacheMessage } from './messages.ts';
import { MemoryLayer, type LayerStats } from './memory-layer.ts';
import type { RedisLayer, RedisLayerStats } from './redis-layer.ts';

/** The version of a deleted user: ids are never reused, so nothing may be cached for it again. */
const DELETED = Number.MAX_SAFE_INTEGER;
/** Above this many writes not yet told to Redis, Redis is cleared instead of told one by one. */
const MAX_PENDING = 1000;

/**
 * The layers in the order a lookup tries them: every lookup asks the in-process layer, and only its misses go on
 * to Redis. So the first layer's hits and misses count the lookups, and a lookup was a hit if any layer answered.
 */
export const LAYER_ORDER = ['memory', 'redis'] as const;

export interface CachedUsersOptions {
  mode: 'memory' | 'redis';
  ttlMs: number;
  maxEntries: number;
  maxBytes: number;
  /** The platform's bus on the cache's channel (src/platform/bus.ts); `localBus` for one instance. */
  bus: InvalidationBus<CacheMessage>;
  shared?: RedisLayer;
  /** Told the delay of every invalidation received from another instance. */
  onInvalidationDelay?: (ms: number) => void;
  /** Tests only: awaited between a load's database read and its store, to interleave writes deterministically. */
  afterLoad?: (key: string) => Promise<void> | void;
  log?: { warn(obj: object, msg: string): void };
}

export interface CacheStatus {
  mode: 'memory' | 'redis';
  layers: (LayerStats & { name: 'memory'; hit_ratio: number } | RedisLayerStats & { name: 'redis'; entries: null; hit_ratio: number; up: boolean })[];
  bus: { kind: 'local' | 'redis'; connected: boolean };
  ttl_ms: number;
}

export interface UsersCache {
  readonly users: UsersStore;
  status(): CacheStatus;
  /** Clears every layer here and, through the bus, on every instance. */
  clear(): Promise<void>;
  close(): void;
}

interface Mark {
  seq: number;
  /** The highest version seen for this key. */
  floor: number;
  at: number;
}

interface Cached {
  user: User;
  v: number;
}

const sumStats = (a: LayerStats, b: LayerStats): LayerStats => ({
  entries: a.entries + b.entries, bytes: a.bytes + b.bytes, hits: a.hits + b.hits, misses: a.misses + b.misses,
  evictions: a.evictions + b.evictions, rejections: a.rejections + b.rejections,
});
const ratio = (hits: number, misses: number) => (hits + misses === 0 ? 0 : hits / (hits + misses));

export function createCachedUsers(inner: UsersStore, opts: CachedUsersOptions): UsersCache {
  const { ttlMs, bus, shared } = opts;
  const instance = `${process.pid}-${Math.random().toString(36).slice(2, 10)}`;
  // Pages live apart from users, with a quarter of the bounds: every write drops them all, in one `clear`.
  const pageEntries = Math.max(1, Math.floor(opts.maxEntries / 4));
  const pageBytes = Math.floor(opts.maxBytes / 4);
  const local = new MemoryLayer<Cached>(Math.max(1, opts.maxEntries - pageEntries), opts.maxBytes - pageBytes);
  const pages = new MemoryLayer<Page>(pageEntries, pageBytes);
  const marks = new Map<string, Mark>();
  const inflight = new Map<string, Promise<unknown>>();
  /** Writes Redis was not told about (id -> version), replayed when it returns. */
  const pending = new Map<string, number>();
  /**
   * A write could not start a new lists generation in Redis: until one is started, the pages there may be older
   * than this instance's own writes, so they are neither read nor stored here.
   */
  let listsPending = false;
  let generations = 0;
  let seq = 0;
  let listsSeq = 0;
  let allSeq = 0;

  const usable = (o?: CallOptions) => !o?.alone && bus.usable;
  const changedSince = (id: string, start: number) => allSeq > start || (marks.get(id)?.seq ?? 0) > start;
  const floorOf = (id: string) => marks.get(id)?.floor ?? 0;

  function dropLists(): void {
    listsSeq = ++seq;
    pages.clear();
    for (const key of inflight.keys()) if (key.startsWith('l:')) inflight.delete(key);
  }

  function dropUser(id: string, v: number): void {
    marks.set(id, { seq: ++seq, floor: Math.max(floorOf(id), v), at: performance.now() });
    local.delete(`u:${id}`);
    inflight.delete(`u:${id}`);
    dropLists();
  }

  function dropAll(): void {
    allSeq = ++seq;
    local.clear();
    pages.clear();
    inflight.clear();
  }

  /** Marks older than twice the TTL protect nothing: no entry or load of that age can be stored any more. */
  const pruner = setInterval(() => {
    const oldest = performance.now() - 2 * ttlMs;
    for (const [id, m] of marks) if (m.at < oldest) marks.delete(id);
  }, Math.max(1000, 2 * ttlMs));
  pruner.unref();
  /** A Redis that hung without dropping the subscription gives no signal when it is back: look each second. */
  const replayer = setInterval(() => {
    if ((pending.size > 0 || listsPending) && shared?.up && bus.usable) void replayPending();
  }, 1000);
  replayer.unref();

  bus.subscribe((msg: CacheMessage) => {
    if (msg.from === instance) return;
    if (msg.k !== 'all') opts.onInvalidationDelay?.(Math.max(0, Date.now() - msg.at));
    if (msg.k === 'user') dropUser(msg.id, msg.v);
    else if (msg.k === 'lists') dropLists();
    else {
      dropAll();
      void replayPending();
    }
  });

  async function tell(msg: CacheMessage): Promise<void> {
    // A Redis that just failed is not waited on again: what it misses is replayed when it answers.
    if (shared && !shared.up) {
      if (msg.k === 'user') remember(msg.id, msg.v);
      return;
    }
    // The bus logs a failed publish; what it could not tell is told again once Redis answers.
    if (!(await bus.publish({ ...msg, from: instance })) && msg.k === 'user') remember(msg.id, msg.v);
  }

  function remember(id: string, v: number): void {
    pending.set(id, Math.max(pending.get(id) ?? 0, v));
  }

  /** Every list page in Redis stops being served (after a write committed, before it is told). */
  async function newListsGeneration(): Promise<void> {
    if (shared && !(await shared.newListsGeneration(`${instance}.${++generations}`))) listsPending = true;
  }

  /** Back from an outage: what Redis missed is written there and told to every instance. */
  async function replayPending(): Promise<void> {
    if (!shared) return;
    if (listsPending) {
      listsPending = false;
      await newListsGeneration();
      if (!listsPending) await tell({ k: 'lists', at: Date.now() });
    }
    if (pending.size === 0) return;
    const todo = [...pending];
    pending.clear();
    if (todo.length > MAX_PENDING) {
      if (await shared.clear()) {
        await newListsGeneration();
        await tell({ k: 'all', at: Date.now() });
      }
      else for (const [id, v] of todo) remember(id, v);
      return;
    }
    for (const [id, v] of todo) {
      if (await shared.set(`u:${id}`, v, null, ttlMs)) await tell({ k: 'user', id, v, at: Date.now() });
      else remember(id, v);
    }
  }

  /** After a write of `id` committed at version `v` (`user` null: deleted). */
  async function wrote(id: string, v: number, user: User | null): Promise<void> {
    dropUser(id, v);
    if (user !== null && v >= floorOf(id)) local.set(`u:${id}`, { user, v }, userBytes(user), performance.now() + ttlMs);
    if (shared) {
      const [stored] = await Promise.all([shared.set(`u:${id}`, v, user === null ? null : encodeUser(user), ttlMs), newListsGeneration()]);
      if (!stored) remember(id, v);
    }
    await tell({ k: 'user', id, v, at: Date.now() });
  }

  /** After users were created: every list page changed. */
  async function created(): Promise<void> {
    dropLists();
    await newListsGeneration();
    await tell({ k: 'lists', at: Date.now() });
  }

  /** One load per key at a time; a caller arriving after an invalidation of the key starts its own. */
  function shareLoad<T>(key: string, load: () => Promise<T>): Promise<T> {
    const running = inflight.get(key);
    if (running !== undefined) return running as Promise<T>;
    const p = load().finally(() => {
      if (inflight.get(key) === p) inflight.delete(key);
    });
    inflight.set(key, p);
    return p;
  }

  async function loadUser(id: string, key: string, o?: CallOptions): Promise<User | null> {
    const start = seq;
    const began = performance.now();
    const hit = shared ? await shared.get(key) : undefined;
    if (hit?.payload != null && hit.version >= floorOf(id) && !changedSince(id, start)) {
      const user = decodeUser(hit.payload);
      local.offer(key, { user, v: hit.version }, userBytes(user), performance.now() + hit.ttlMs);
      return user;
    }
    const user = await inner.get(id, o);
    if (opts.afterLoad) await opts.afterLoad(key);
    if (user === null) return null;
    const v = user.updated_at.getTime();
    const age = performance.now() - began;
    if (age >= ttlMs || changedSince(id, start) || v < floorOf(id)) return user;
    // One admission policy for both layers: a user not worth a place here is not written to Redis either, so a
    // load that misses everywhere costs no Redis write per request (a miss still asks Redis first, above).
    if (local.offer(key, { user, v }, userBytes(user), began + ttlMs) && shared) void shared.set(key, v, encodeUser(user), ttlMs - age);
    return user;
  }

  async function loadPage(key: string, query: { limit: number; cursor?: string }, o?: CallOptions): Promise<Page> {
    const start = seq;
    const began = performance.now();
    const listsChanged = () => listsSeq > start || allSeq > start;
    // The generation is read before the database: a write that commits after this read replaces it.
    const hit = shared && !listsPending ? await shared.getPage(key) : undefined;
    if (hit?.payload != null && !listsChanged()) {
      const page = decodePage(hit.payload);
      pages.offer(key, page, bytesOfPage(page), performance.now() + hit.ttlMs);
      return page;
    }
    const page = await inner.list(query, o);
    if (opts.afterLoad) await opts.afterLoad(key);
    const age = performance.now() - began;
    if (age < ttlMs && !listsChanged()) {
      const kept = pages.offer(key, page, bytesOfPage(page), began + ttlMs);
      if (kept && hit && !listsPending) void shared?.setPage(key, hit.generation, encodePage(page), ttlMs - age);
    }
    return page;
  }

  const users: UsersStore = {
    async create(input: NewUser, o?: CallOptions) {
      const user = await inner.create(input, o);
      await created();
      return user;
    },
    async createMany(inputs: NewUser[], o?: CallOptions) {
      const users = await inner.createMany(inputs, o);
      await created();
      return users;
    },
    async get(id: string, o?: CallOptions) {
      if (!usable(o)) return inner.get(id, o);
      const key = `u:${id}`;
      const hit = local.get(key);
      if (hit !== undefined) return hit.user;
      return shareLoad(key, () => loadUser(id, key, o));
    },
    async update(id: string, patch: UserPatch, o?: ChangeOptions) {
      const user = await inner.update(id, patch, o);
      if (user !== null) await wrote(id, user.updated_at.getTime(), user);
      return user;
    },
    async delete(id: string, o?: ChangeOptions) {
      await inner.delete(id, o);
      await wrote(id, DELETED, null);
    },
    async list(query, o?: CallOptions) {
      if (!usable(o)) return inner.list(query, o);
      const key = `l:${query.limit}:${query.cursor ?? ''}`;
      const hit = pages.get(key);
      if (hit !== undefined) return hit;
      return shareLoad(key, () => loadPage(key, query, o));
    },
    stream: (o) => inner.stream(o),
  };

  return {
    users,
    status() {
      const mem = sumStats(local.stats(), pages.stats());
      const layers: CacheStatus['layers'] = [{ name: 'memory', ...mem, hit_ratio: ratio(mem.hits, mem.misses) }];
      if (shared) {
        const s = shared.stats();
        layers.push({ name: 'redis', entries: null, ...s, hit_ratio: ratio(s.hits, s.misses), up: shared.up });
      }
      return { mode: opts.mode, layers, bus: { kind: shared ? 'redis' : 'local', connected: bus.usable }, ttl_ms: ttlMs };
    },
    async clear() {
      dropAll();
      if (shared) await shared.clear();
      // The clear removed the generation too: a new one, so no page loaded before the clear is stored after it.
      await newListsGeneration();
      await tell({ k: 'all', at: Date.now() });
    },
    close() {
      clearInterval(pruner);
      clearInterval(replayer);
    },
  };
}
