/**
 * The PostgreSQL adapter of `WebhooksStore` (src/db/events-store.ts): registered endpoints and their delivery
 * attempts, on the job queue's pool, apart from user traffic.
 */
import type { Row } from 'postgres';
import { uuidv7 } from '../../platform/lib/uuid.ts';
import type { Delivery, EventType, Webhook, WebhooksStore } from '../events-store.ts';
import type { Db } from './db.ts';

interface WebhookRow extends Row {
  id: string;
  url: string;
  events: EventType[];
  secret: string;
  created_at: Date;
}

interface DeliveryRow extends Row {
  event_id: string;
  event_type: EventType;
  attempt: number;
  status_code: number | null;
  error: string | null;
  at: Date;
}

const toWebhook = (r: WebhookRow): Webhook =>
  ({ id: r.id, url: r.url, events: r.events, secret: r.secret, createdAt: r.created_at.toISOString() });

/**
 * Event types go in as one comma-joined text (a fixed set, without commas): `sql.array` was seen to send the bare
 * string on the first statement of a fresh connection (22P02 "malformed array literal", about one run in three of
 * test/webhooks.test.ts), presumably before postgres.js had fetched the server's array types.
 */
export function createPostgresWebhooksStore(db: Db): WebhooksStore {
  return {
    async create(w, opts) {
      const [row] = await db.query((sql) => sql<WebhookRow[]>`
        INSERT INTO webhooks (id, url, events, secret)
        VALUES (${uuidv7()}, ${w.url}, string_to_array(${w.events.join(',')}, ','), ${w.secret})
        RETURNING id, url, events, secret, created_at`, opts);
      return toWebhook(row!);
    },

    async list(opts) {
      const rows = await db.query((sql) => sql<WebhookRow[]>`
        SELECT id, url, events, secret, created_at FROM webhooks ORDER BY id`, opts);
      return rows.map(toWebhook);
    },

    async get(id, opts) {
      const rows = await db.query((sql) => sql<WebhookRow[]>`
        SELECT id, url, events, secret, created_at FROM webhooks WHERE id = ${id}`, opts);
      return rows[0] ? toWebhook(rows[0]) : undefined;
    },

    async remove(id, opts) {
      const rows = await db.query((sql) => sql`DELETE FROM webhooks WHERE id = ${id} RETURNING id`, opts);
      return rows.length > 0;
    },

    async recordDelivery(webhookId, d) {
      // A webhook deleted meanwhile: the attempt has nobody left to show it to.
      await db.query((sql) => sql`
        INSERT INTO webhook_deliveries (webhook_id, event_id, event_type, attempt, status_code, error)
        SELECT ${webhookId}, ${d.eventId}, ${d.eventType}, ${d.attempt}, ${d.statusCode}, ${d.error}
        WHERE EXISTS (SELECT 1 FROM webhooks WHERE id = ${webhookId})`);
    },

    async deliveries(webhookId, limit, opts) {
      const rows = await db.query((sql) => sql<(DeliveryRow & { found: boolean })[]>`
        SELECT w.id IS NOT NULL AS found, d.event_id, d.event_type, d.attempt, d.status_code, d.error, d.at
        FROM (SELECT id FROM webhooks WHERE id = ${webhookId}) w
        LEFT JOIN LATERAL (
          SELECT * FROM webhook_deliveries WHERE webhook_id = w.id ORDER BY seq DESC LIMIT ${limit}
        ) d ON true`, opts);
      if (rows.length === 0) return undefined;
      return rows.filter((r) => r.event_id !== null).map((r): Delivery => ({
        eventId: r.event_id, eventType: r.event_type, attempt: r.attempt, statusCode: r.status_code, error: r.error,
        at: r.at.toISOString(),
      }));
    },
  };
}
