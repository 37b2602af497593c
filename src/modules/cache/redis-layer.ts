/**
 * The shared layer: users by id in Redis, each value prefixed with its version (`updated_at` in ms), written by a
 * script that never lets an older version replace a newer one or a tombstone. A write leaves a tombstone of
 * its version for one TTL, so a read that loaded the row before the write cannot put the old row back.
 *
 * And list pages, each prefixed with the lists generation it was loaded under: one key holds the current
 * generation, which every write of any user replaces with a token never used before. A page is served only while
 * its generation is the current one, and stored only if the generation read before its database read is still
 * current, so a page loaded before a write cannot be stored, or served, after that write's new generation.
 *
 * Redis is never waited on past its command timeout (src/platform/redis.ts), and after a failure the layer is
 * skipped for a short while so a hung Redis costs one timeout, not one per request.
 */
import type { Redis } from 'ioredis';

/**
 * The layer's commands, each one Lua script so that a lookup or a store is one command and one round trip. They
 * are defined with ioredis `defineCommand`, which sends each script's SHA (EVALSHA) and its text only when Redis
 * does not know it yet.
 */
const SCRIPTS = {
  /** `KEYS[1]`. Returns false when absent, else the value and its PTTL. */
  spateCacheGet: {
    numberOfKeys: 1,
    lua: `
local v = redis.call('GET', KEYS[1])
if not v then return false end
return {v, redis.call('PTTL', KEYS[1])}`,
  },
  /** `KEYS[1]`; `ARGV`: version, payload ('' for a tombstone), PX. Returns 1 when stored. */
  spateCacheSetIfNewer: {
    numberOfKeys: 1,
    lua: `
local cur = redis.call('GET', KEYS[1])
if cur then
  local sep = string.find(cur, '|', 1, true)
  local cv = tonumber(string.sub(cur, 1, sep - 1))
  local nv = tonumber(ARGV[1])
  if cv > nv then return 0 end
  if cv == nv and ARGV[2] ~= '' and sep < string.len(cur) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. ARGV[2], 'PX', ARGV[3])
return 1`,
  },
  /** `KEYS`: the generation, the page. Returns the generation ('' when none), then the page and its PTTL if any. */
  spateCacheGetPage: {
    numberOfKeys: 2,
    lua: `
local g = redis.call('GET', KEYS[1]) or ''
local v = redis.call('GET', KEYS[2])
if not v then return {g} end
return {g, v, redis.call('PTTL', KEYS[2])}`,
  },
  /** `KEYS`: the generation, the page; `ARGV`: the generation read before loading, payload, PX. Returns 1 when stored. */
  spateCacheSetPageIfCurrent: {
    numberOfKeys: 2,
    lua: `
local g = redis.call('GET', KEYS[1]) or ''
if g ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[1] .. '|' .. ARGV[2], 'PX', ARGV[3])
return 1`,
  },
} as const;

/** The client with the scripts above as commands. */
type ScriptedRedis = Redis & {
  spateCacheGet(key: string): Promise<[string, number] | null>;
  spateCacheSetIfNewer(key: string, version: string, payload: string, px: string): Promise<number>;
  spateCacheGetPage(generationKey: string, key: string): Promise<[string] | [string, string, number]>;
  spateCacheSetPageIfCurrent(generationKey: string, key: string, generation: string, payload: string, px: string): Promise<number>;
};

/** The key of the lists generation, under the layer's prefix. */
const LISTS_GENERATION = 'lists:gen';

/** How long the layer is skipped after a failed command. */
export const REDIS_LAYER_BACKOFF_MS = 1000;

export interface SharedHit {
  version: number;
  /** The stored text; null for a tombstone. */
  payload: string | null;
  /** What is left of its life. */
  ttlMs: number;
}

export interface SharedPage {
  /** The current lists generation ('' when none was set): what a load must store its page under. */
  generation: string;
  /** The page's text when it was stored under the current generation, else null. */
  payload: string | null;
  ttlMs: number;
}

export interface RedisLayerStats {
  hits: number;
  misses: number;
  errors: number;
}

export class RedisLayer {
  #skipUntil = 0;
  #hits = 0;
  #misses = 0;
  #errors = 0;

  readonly #redis: ScriptedRedis;

  constructor(
    redis: Redis,
    private readonly prefix: string,
  ) {
    for (const [name, script] of Object.entries(SCRIPTS)) redis.defineCommand(name, script);
    this.#redis = redis as ScriptedRedis;
  }

  /** Usable now: connected and no failure in the last moment. */
  get up(): boolean {
    return this.#redis.status === 'ready' && performance.now() >= this.#skipUntil;
  }

  /** The entry, or undefined when absent or Redis failed (a miss either way). */
  async get(key: string): Promise<SharedHit | undefined> {
    if (!this.up) return undefined;
    try {
      const res = await this.#redis.spateCacheGet(this.prefix + key);
      const raw = res?.[0];
      const ttlMs = Number(res?.[1]);
      if (typeof raw !== 'string' || !(ttlMs > 0)) {
        this.#misses++;
        return undefined;
      }
      const sep = raw.indexOf('|');
      const payload = raw.slice(sep + 1);
      // A tombstone serves nothing: the caller reads the database.
      if (payload === '') this.#misses++;
      else this.#hits++;
      return { version: Number(raw.slice(0, sep)), payload: payload === '' ? null : payload, ttlMs };
    } catch {
      this.#failed();
      return undefined;
    }
  }

  /** Stores `payload` (null: a tombstone) unless Redis holds a newer version. False when Redis failed. */
  async set(key: string, version: number, payload: string | null, ttlMs: number): Promise<boolean> {
    if (!this.up) return false;
    try {
      await this.#redis.spateCacheSetIfNewer(this.prefix + key, String(version), payload ?? '', String(Math.ceil(ttlMs)));
      return true;
    } catch {
      this.#failed();
      return false;
    }
  }

  /** The page at `key` with the current lists generation, or undefined when Redis failed. */
  async getPage(key: string): Promise<SharedPage | undefined> {
    if (!this.up) return undefined;
    try {
      const [generation, raw, ttl] = await this.#redis.spateCacheGetPage(this.prefix + LISTS_GENERATION, this.prefix + key);
      const ttlMs = Number(ttl);
      const sep = typeof raw === 'string' ? raw.indexOf('|') : -1;
      if (sep < 0 || !(ttlMs > 0) || raw!.slice(0, sep) !== generation) {
        this.#misses++;
        return { generation, payload: null, ttlMs: 0 };
      }
      this.#hits++;
      return { generation, payload: raw!.slice(sep + 1), ttlMs };
    } catch {
      this.#failed();
      return undefined;
    }
  }

  /** Stores a page loaded under `generation`, unless a write has replaced it since. False when Redis failed. */
  async setPage(key: string, generation: string, payload: string, ttlMs: number): Promise<boolean> {
    if (!this.up) return false;
    try {
      await this.#redis.spateCacheSetPageIfCurrent(this.prefix + LISTS_GENERATION, this.prefix + key, generation, payload,
        String(Math.ceil(ttlMs)));
      return true;
    } catch {
      this.#failed();
      return false;
    }
  }

  /** Starts a new lists generation (`token`, never used before): every stored page stops being served. */
  async newListsGeneration(token: string): Promise<boolean> {
    if (!this.up) return false;
    try {
      await this.#redis.set(this.prefix + LISTS_GENERATION, token);
      return true;
    } catch {
      this.#failed();
      return false;
    }
  }

  /** Deletes every key of this layer (SCAN, so Redis is never blocked). */
  async clear(): Promise<boolean> {
    try {
      let cursor = '0';
      do {
        const [next, keys] = await this.#redis.scan(cursor, 'MATCH', `${this.prefix}*`, 'COUNT', 500);
        if (keys.length > 0) await this.#redis.unlink(...keys);
        cursor = next;
      } while (cursor !== '0');
      return true;
    } catch {
      this.#failed();
      return false;
    }
  }

  stats(): RedisLayerStats {
    return { hits: this.#hits, misses: this.#misses, errors: this.#errors };
  }

  #failed(): void {
    this.#errors++;
    this.#skipUntil = performance.now() + REDIS_LAYER_BACKOFF_MS;
  }
}
