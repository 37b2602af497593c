/**
 * The relay: moves events from the outbox into delivery jobs, one per endpoint subscribed to the event's type.
 * It is woken by each commit that recorded events (the outbox's NOTIFY) and also looks every OUTBOX_POLL_MS, for
 * a wake-up missed while disconnected.
 *
 * At-least-once: an event leaves the outbox only once its jobs are enqueued (OutboxStore.take); a relay that dies
 * or fails before leaves it there, and it is relayed again. Each job's singleton key (endpoint and event) keeps a
 * second copy out while the first is queued or running; a copy made after the first ended is a duplicate delivery
 * with the same `webhook-id`, which receivers deduplicate. Several relays (instances) share the work: each takes
 * events the others do not hold. Only the JobsStore interface is used, whatever queue backs it.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { OutboxEvent, OutboxStore, WebhooksStore } from '../../db/events-store.ts';
import type { JobsStore } from '../../platform/jobs/store.ts';

export const DELIVER_KIND = 'webhook.deliver';
/** Events whose jobs are enqueued together. */
const FAN_OUT_AT_ONCE = 32;
/** How long a woken relay lets further events gather before it takes them: the latency it adds to a delivery. */
const GATHER_MS = 50;

/** What a delivery job carries: the endpoint and the whole event, so a retry sends exactly the same body. */
export interface DeliveryPayload {
  webhookId: string;
  event: Omit<OutboxEvent, 'traceparent'>;
}

export interface RelayOptions {
  outbox: OutboxStore;
  webhooks: WebhooksStore;
  jobs: JobsStore;
  maxAttempts: number;
  pollMs: number;
  log: { warn(obj: object, msg: string): void };
  /** Events per take. */
  batch?: number;
}

export interface Relay {
  stop(): Promise<void>;
}

/** Enqueues one event's jobs; resolves once every one is stored (or was already queued). */
async function fanOut(jobs: JobsStore, hooks: readonly { id: string; events: readonly string[] }[], e: OutboxEvent, maxAttempts: number) {
  const { traceparent, ...event } = e;
  await Promise.all(hooks.filter((h) => h.events.includes(e.type)).map((h) => jobs.enqueue({
    kind: DELIVER_KIND,
    payload: { webhookId: h.id, event } satisfies DeliveryPayload,
    // The delivery continues the trace of the request that made the change, not the relay's.
    traceparent,
    maxAttempts,
    singletonKey: `webhook:${h.id}:${e.id}`,
  })));
}

export function startRelay(o: RelayOptions): Relay {
  const batch = o.batch ?? 500;
  let stopped = false;
  let kicked = false;
  let wake: (() => void) | undefined;
  let unlisten: (() => Promise<void>) | undefined;
  const stop = new AbortController();
  const idleMs = Math.min(o.pollMs, o.outbox.maxIdleMs ?? Infinity);

  const kick = () => { kicked = true; wake?.(); };

  /** Relays one take's worth; returns how many events it took. */
  const once = () => o.outbox.take(batch, async (events) => {
    const hooks = await o.webhooks.list();
    // A few at a time: the queue's pool is small, and a take's worth at once would wait past its acquire deadline.
    for (let i = 0; i < events.length; i += FAN_OUT_AT_ONCE) {
      await Promise.all(events.slice(i, i + FAN_OUT_AT_ONCE).map((e) => fanOut(o.jobs, hooks, e, o.maxAttempts)));
    }
  });

  const pause = (ms: number) => sleep(ms, undefined, { signal: stop.signal }).catch(() => {});

  const loop = (async () => {
    while (!stopped) {
      let full = false;
      try {
        unlisten ??= await o.outbox.listen(kick);
        kicked = false;
        full = (await once()) === batch;
      } catch (err) {
        o.log.warn({ reason: (err as Error).message }, 'relaying events failed; trying again at the next poll');
      }
      // A full take may have left more behind: straight on.
      if (full || stopped) continue;
      // Otherwise wait for a wake-up (one may have come during the take, for events it did not see) or the poll.
      if (!kicked) {
        await Promise.race([new Promise<void>((r) => { wake = r; }), pause(idleMs)]);
        wake = undefined;
      }
      // Under a stream of commits every one wakes the relay: gathering for a moment makes one take of many
      // events instead of a transaction for every commit, which would cost the writes much of their rate.
      if (kicked && !stopped) await pause(GATHER_MS);
    }
  })();

  return {
    async stop() {
      stopped = true;
      stop.abort();
      wake?.();
      await loop;
      await unlisten?.();
    },
  };
}
