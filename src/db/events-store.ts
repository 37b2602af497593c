/**
 * The storage interfaces of events and webhooks (docs/webhooks.md): the outbox the users adapters write each
 * change's event into, atomically with the change, and the registered endpoints with their delivery attempts.
 * The adapters: src/db/postgres/outbox.ts and webhooks.ts (the event in the change's transaction);
 * src/db/cassandra/outbox-take.ts and webhooks.ts (the event in the user's row, by the change's conditional write).
 */
import type { CallOptions } from './users-store.ts';

export const EVENT_TYPES = ['user.created', 'user.updated', 'user.deleted'] as const;
export type EventType = (typeof EVENT_TYPES)[number];

/** One recorded change. `data` is the User as the API shows it, or `{id}` for `user.deleted`. */
export interface OutboxEvent {
  /** Stable: the `webhook-id` of every delivery of this event, retries included. */
  id: string;
  type: EventType;
  /** ISO-8601 with milliseconds: the change's own time (created_at, updated_at, or the delete's). */
  occurredAt: string;
  data: unknown;
  /** The traceparent of the request that made the change; null when it was not traced. */
  traceparent: string | null;
}

export interface OutboxStore {
  /**
   * Takes up to `max` events, oldest first, skipping those another relay holds, and hands them to `relay`: they
   * are deleted when it resolves, and stay for the next relay when it throws or the process dies meanwhile.
   * Returns how many were taken.
   */
  take(max: number, relay: (events: OutboxEvent[]) => Promise<void>): Promise<number>;
  /** Calls `onRecorded` soon after events commit (any instance); resolves once listening; returns the stop. */
  listen(onRecorded: () => void): Promise<() => Promise<void>>;
  /**
   * The longest a relay may wait between takes whatever its poll, when takes also keep something alive (Cassandra:
   * the shards' leases, renewed by a take); undefined when nothing is.
   */
  readonly maxIdleMs?: number;
}

export interface Webhook {
  id: string;
  url: string;
  events: EventType[];
  /** `whsec_...`: signs every delivery. */
  secret: string;
  createdAt: string;
}

export interface Delivery {
  eventId: string;
  eventType: EventType;
  attempt: number;
  /** The receiver's status; null when no response came (timeout, refused, connection error). */
  statusCode: number | null;
  error: string | null;
  at: string;
}

export interface WebhooksStore {
  create(w: { url: string; events: EventType[]; secret: string }, opts?: CallOptions): Promise<Webhook>;
  /** Oldest first. */
  list(opts?: CallOptions): Promise<Webhook[]>;
  get(id: string, opts?: CallOptions): Promise<Webhook | undefined>;
  /** Deletes it and its delivery attempts; false when there was none. */
  remove(id: string, opts?: CallOptions): Promise<boolean>;
  recordDelivery(webhookId: string, d: Omit<Delivery, 'at'>): Promise<void>;
  /** Newest first; undefined when the webhook does not exist. */
  deliveries(webhookId: string, limit: number, opts?: CallOptions): Promise<Delivery[] | undefined>;
}
