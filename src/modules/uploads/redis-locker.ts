/**
 * A per-upload lock shared by every instance through Redis, for @tus/server's `Locker` interface (it ships only
 * an in-process one). Without it two instances could append to one upload at once and interleave its bytes.
 *
 * The lock is a key holding the holder's random token, set only if absent (SET NX PX) and deleted only by its
 * holder (a compare-and-delete script), with a TTL renewed while held, so an instance that dies frees its locks
 * within `ttlMs`. tus asks that a request which finds the lock taken makes the holder let go (the holder is most
 * often a PATCH whose client vanished, and the client resuming is the request waiting): the waiter sets a release
 * flag, the holder sees it at its next renewal and calls its `cancelReq`, and @tus/server then ends the
 * holder's request after `lockDrainTimeout` and unlocks. Commands go through the shared breaker
 * (src/platform/redis.ts); Redis unreachable is `unavailable` (503), never an unlocked write.
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Lock, Locker, RequestRelease } from '@tus/server';
import type { Redis } from 'ioredis';
import { errors } from '../../platform/errors.ts';
import type { RedisBreaker } from '../../platform/redis.ts';

export interface RedisLockerOptions {
  /** Key prefix; the lock of upload `id` is `<prefix><id>`, its release flag `<prefix><id>:release`. */
  prefix?: string;
  /** A holder that stops renewing (it died) loses the lock after this long. */
  ttlMs?: number;
  /** How often a holder renews and looks for a release request; also the waiters' retry period. */
  checkMs?: number;
  /** A waiter gives up after this long (tus: 500, "failed to acquire lock"). */
  acquireTimeoutMs?: number;
}

// KEYS[1] lock, KEYS[2] release flag; ARGV[1] token, ARGV[2] ttl. A new holder clears a release request
// that was meant for the previous one.
const ACQUIRE = `if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then redis.call('del', KEYS[2]) return 1 end
redis.call('set', KEYS[2], '1', 'PX', ARGV[2]) return 0`;
// Returns -1 when the lock is no longer ours, else whether a release was asked for.
const RENEW = `if redis.call('get', KEYS[1]) ~= ARGV[1] then return -1 end
redis.call('pexpire', KEYS[1], ARGV[2]) return redis.call('exists', KEYS[2])`;
const RELEASE = `if redis.call('get', KEYS[1]) == ARGV[1] then redis.call('del', KEYS[1], KEYS[2]) end return 1`;

export function createRedisLocker(redis: Redis, breaker: RedisBreaker | undefined, o: RedisLockerOptions = {}): Locker {
  const { prefix = 'spate:upload-lock:', ttlMs = 10_000, checkMs = 100, acquireTimeoutMs = 15_000 } = o;
  const run = async <T>(command: () => Promise<T>): Promise<T> => {
    try {
      return await (breaker ? breaker.run(command) : command());
    } catch (err) {
      throw errors.unavailable('upload lock store unreachable', err);
    }
  };
  const evalScript = (script: string, id: string, ...args: string[]) =>
    run(() => redis.eval(script, 2, `${prefix}${id}`, `${prefix}${id}:release`, ...args) as Promise<number>);

  return {
    newLock(id: string): Lock {
      const token = randomUUID();
      let renewal: NodeJS.Timeout | undefined;
      return {
        async lock(signal: AbortSignal, cancelReq: RequestRelease): Promise<void> {
          const deadline = Date.now() + acquireTimeoutMs;
          while ((await evalScript(ACQUIRE, id, token, String(ttlMs))) !== 1) {
            if (Date.now() > deadline) throw errors.unavailable('upload is locked by another request');
            // Aborted (the request went away): rejects with the signal's reason, as @tus/server's own locker does.
            await sleep(checkMs, undefined, { signal });
          }
          let asked = false;
          renewal = setInterval(() => {
            evalScript(RENEW, id, token, String(ttlMs)).then((r) => {
              if (r !== 0 && !asked) {
                asked = true;
                void cancelReq();
              }
            }, () => { /* Redis away: the TTL decides; the write itself is not cut short by our own outage */ });
          }, checkMs);
          renewal.unref();
        },
        async unlock(): Promise<void> {
          clearInterval(renewal);
          await evalScript(RELEASE, id, token);
        },
      };
    },
  };
}
