/**
 * Request coalescing: concurrent lookups by key become one batched load (the DataLoader pattern).
 *
 * Lookups made while a batch waits for a database connection join it, so under load N primary-key reads cost one
 * statement, one round trip and one connection instead of N; unloaded, a lookup waits one `setImmediate` turn.
 * At most one batch waits at a time, and the keys are taken only once the loader holds its connection (`take`
 * is called from inside the loader), so a batch is as large as the load of that moment.
 *
 * With `maxWaitMs`, each lookup's wait for its batch to be sent is its own: a lookup still waiting `maxWaitMs`
 * after it was made fails alone (`expired()`), and a batch that ran out of time waiting for a connection fails
 * nobody who joined it later: they wait on in the next batch, each until its own time is up.
 */

/**
 * Runs `fn` once the requests parsed in this turn of the event loop have joined (`setImmediate`), or, with
 * nothing in flight and so nothing to wait for, as soon as the current burst is in (`process.nextTick`).
 */
function soon(idle: () => boolean, fn: () => void): void {
  if (idle()) process.nextTick(fn);
  else setImmediate(fn);
}

interface Pending<K, V> {
  key: K;
  resolve: (value: V | undefined) => void;
  reject: (err: unknown) => void;
  timer?: NodeJS.Timeout;
}

export interface WaitBound {
  /** How long a lookup may wait for its batch to be sent. */
  maxWaitMs: number;
  /** The error of a lookup whose wait ran out. */
  expired: () => Error;
}

/**
 * Returns `load(key)`. `run(take, signal)` must call `take()` once it is ready to send the batch and resolve
 * with the values found, by key; a key missing from the map resolves to undefined. If `run` fails, every lookup
 * of its batch fails with the same error. When it failed before calling `take`: without `bound`, every lookup
 * waiting so far fails; with it, only when it failed at once (nothing to wait for: the pool is closed), else
 * the lookups wait on in a new batch. `signal` aborts when every lookup the batch waited for has expired.
 */
export function coalesce<K, V>(
  run: (take: () => K[], signal: AbortSignal) => Promise<Map<K, V>>,
  maxBatch: number,
  idle: () => boolean = () => false,
  bound?: WaitBound,
): (key: K) => Promise<V | undefined> {
  let pending: Pending<K, V>[] = [];
  let scheduled = false;
  /** The batch waiting for a connection, if any: aborted when its last lookup expires. */
  let waiting: AbortController | undefined;

  function dispatch(): void {
    let batch: Pending<K, V>[] | undefined;
    const controller = new AbortController();
    waiting = controller;
    const startedAt = performance.now();
    const take = (): K[] => {
      if (waiting === controller) waiting = undefined;
      if (pending.length <= maxBatch) {
        batch = pending;
        pending = [];
      } else {
        batch = pending.splice(0, maxBatch);
      }
      for (const p of batch) clearTimeout(p.timer);
      scheduled = false;
      if (pending.length > 0) schedule();
      return batch.map((p) => p.key);
    };
    run(take, controller.signal).then(
      (found) => {
        for (const p of batch!) p.resolve(found.get(p.key));
      },
      (err) => {
        if (batch !== undefined) {
          for (const p of batch) p.reject(err);
          return;
        }
        if (waiting === controller) waiting = undefined;
        scheduled = false;
        // Ran out of time waiting for a connection (or every lookup expired): each lookup has its own deadline.
        const waited = performance.now() - startedAt;
        if (bound && (controller.signal.aborted || waited >= bound.maxWaitMs / 2)) {
          if (pending.length > 0) schedule();
          return;
        }
        // Failed before taking its batch, at once: it fails those who were waiting for it.
        batch = pending;
        pending = [];
        for (const p of batch) {
          clearTimeout(p.timer);
          p.reject(err);
        }
      },
    );
  }

  function expire(p: Pending<K, V>): void {
    const i = pending.indexOf(p);
    if (i < 0) return;
    pending.splice(i, 1);
    p.reject(bound!.expired());
    if (pending.length === 0) waiting?.abort();
  }

  function schedule(): void {
    scheduled = true;
    soon(idle, dispatch);
  }

  return (key) => new Promise<V | undefined>((resolve, reject) => {
    const p: Pending<K, V> = { key, resolve, reject };
    if (bound) p.timer = setTimeout(() => expire(p), bound.maxWaitMs);
    pending.push(p);
    if (!scheduled) schedule();
  });
}

/**
 * Single flight for reads: calls with the same key made before the read is sent share it and its result.
 *
 * `read(args, sent)` must call `sent()` as its statement leaves (from inside the query builder, once it holds a
 * connection). A call after that starts a read of its own, so every caller gets a result read after it asked:
 * sharing never serves a page older than the caller's own request, and a write acknowledged before a list was
 * asked for is in that list. Like `coalesce`, the first call waits one `setImmediate` turn unless `idle()`, so
 * the requests parsed in one turn of the event loop can join it. The result is shared: callers must not change it.
 */
export function singleFlight<A, V>(
  read: (args: A, sent: () => void) => Promise<V>,
  idle: () => boolean = () => false,
): (key: string, args: A) => Promise<V> {
  const open = new Map<string, Promise<V>>();
  return (key, args) => {
    const joined = open.get(key);
    if (joined) return joined;
    let done = false;
    const close = () => {
      if (done) return;
      done = true;
      if (open.get(key) === shared) open.delete(key);
    };
    const shared = new Promise<V>((resolve, reject) => {
      soon(idle, () => read(args, close).then(resolve, reject).finally(close));
    });
    open.set(key, shared);
    return shared;
  };
}

/**
 * A signal sent by `send`, at most one in flight: a call while one is in flight asks for one more after it, however
 * many such calls come, so a stream of calls costs a send per round trip rather than one each. `send` must not
 * reject (a signal that could not be sent is the caller's to forget).
 */
export function oneInFlight(send: () => Promise<unknown>): () => void {
  let sending = false;
  let again = false;
  const go = () => {
    sending = true;
    again = false;
    void send().finally(() => {
      sending = false;
      if (again) go();
    });
  };
  return () => {
    if (sending) again = true;
    else go();
  };
}
