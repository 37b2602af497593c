/**
 * The users cache's invalidations between instances: the messages it publishes on its channel of the platform's
 * invalidation bus (src/platform/bus.ts), which also tells it when messages may have been missed.
 */

export const CACHE_CHANNEL = 'spate:cache:invalidate';

/** `from`: the instance that sent it, which ignores its own messages. */
export type CacheMessage = { from?: string } & (
  /** A user changed to version `v` (deleted: `Number.MAX_SAFE_INTEGER`); list pages changed with it. */
  | { k: 'user'; id: string; v: number; at: number }
  /** Users were created: list pages changed. */
  | { k: 'lists'; at: number }
  /** Anything may have changed (a clear; the bus delivers it too after an outage or an unreadable message). */
  | { k: 'all'; at: number }
);

/** What the bus delivers when this instance may have missed messages. */
export const EVERYTHING: CacheMessage = { k: 'all', at: 0 };
