/**
 * Request coalescing: concurrent lookups by key become one batched load (the DataLoader pattern).
 *
 * Lookups made while a batch waits for a database connection join it, so under load N primary-key reads cost one
 * statement, one round trip and one connection instead of N; unloaded, a lookup waits one `setImmediate` turn.
 * At most one batch waits at a time, and the keys are taken only once the loader holds its connection (`take`
 * is called from inside the loader), so a batch is as large as the load of that moment.
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
}

/**
 * Returns `load(key)`. `run(take)` must call `take()` once it is ready to send the batch and resolve with the
 * values found, by key; a key missing from the map resolves to undefined. If `run` fails, every lookup of its
 * batch fails with the same error (or, when it failed before calling `take`, every lookup waiting so far).
 */
export function coalesce<K, V>(
  run: (take: () => K[]) => Promise<Map<K, V>>,
  maxBatch: number,
  idle: () => boolean = () => false,
): (key: K) => Promise<V | undefined> {
  let pending: Pending<K, V>[] = [];
  let scheduled = false;

  function dispatch(): void {
    let batch: Pending<K, V>[] | undefined;
    const take = (): K[] => {
      if (pending.length <= maxBatch) {
        batch = pending;
        pending = [];
      } else {
        batch = pending.splice(0, maxBatch);
      }
      scheduled = false;
      if (pending.length > 0) schedule();
      return batch.map((p) => p.key);
    };
    run(take).then(
      (found) => {
        for (const p of batch!) p.resolve(found.get(p.key));
      },
      (err) => {
        if (batch === undefined) {
          // Failed before taking its batch (no connection came free): it fails those who were waiting for it.
          batch = pending;
          pending = [];
          scheduled = false;
        }
        for (const p of batch) p.reject(err);
      },
    );
  }

  function schedule(): void {
    scheduled = true;
    soon(idle, dispatch);
  }

  return (key) => new Promise<V | undefined>((resolve, reject) => {
    pending.push({ key, resolve, reject });
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
