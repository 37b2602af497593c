/**
 * The Cassandra adapter of `WebhooksStore` (src/db/events-store.ts), as src/db/postgres/webhooks.ts on PostgreSQL:
 * registered endpoints, all in one partition of `webhooks` (they are few, and the relay lists them at each take)
 * in id order, which is creation order (UUIDv7 text); each endpoint's delivery attempts in its own partition of
 * `webhook_deliveries`, by a timeuuid, read newest first.
 */
import { types } from 'cassandra-driver';
import { uuidv7 } from '../../platform/lib/uuid.ts';
import type { Delivery, EventType, Webhook, WebhooksStore } from '../events-store.ts';
import { awaitSchema, type Schema } from './schema.ts';
import type { ExecOptions, Session } from './session.ts';
import { SHARD_KEY, textKey } from './statements.ts';

const toWebhook = (r: types.Row): Webhook => ({
  id: String(r.get('id')), url: String(r.get('url')), events: r.get('events') as EventType[], secret: String(r.get('secret')),
  createdAt: (r.get('created_at') as Date).toISOString(),
});

export function createCassandraWebhooksStore(session: Session, schema: Schema): WebhooksStore {
  const ks = `"${session.keyspace}"`;
  const COLUMNS = 'id, url, events, secret, created_at';
  const INSERT = `INSERT INTO ${ks}.webhooks (shard, ${COLUMNS}) VALUES (0, ?, ?, ?, ?, ?)`;
  const LIST = `SELECT ${COLUMNS} FROM ${ks}.webhooks WHERE shard = 0`;
  const GET = `SELECT ${COLUMNS} FROM ${ks}.webhooks WHERE shard = 0 AND id = ?`;
  const DELETE = `DELETE FROM ${ks}.webhooks WHERE shard = 0 AND id = ?`;
  const DELETE_DELIVERIES = `DELETE FROM ${ks}.webhook_deliveries WHERE webhook_id = ?`;
  const RECORD = `INSERT INTO ${ks}.webhook_deliveries (webhook_id, seq, event_id, event_type, attempt, status_code, error, at) `
    + 'VALUES (?, ?, ?, ?, ?, ?, ?, ?)';
  const DELIVERIES = `SELECT event_id, event_type, attempt, status_code, error, at FROM ${ks}.webhook_deliveries `
    + 'WHERE webhook_id = ? ORDER BY seq DESC LIMIT ?';

  async function exec(cql: string, params: unknown[], o: ExecOptions): Promise<types.ResultSet> {
    await awaitSchema(schema);
    return session.execute(cql, params, o);
  }
  const endpoints = (kind: 'read' | 'write', deadline?: number): ExecOptions => ({ kind, keys: [SHARD_KEY], idempotent: true, deadline });
  const get = async (id: string, deadline?: number) => (await exec(GET, [id], endpoints('read', deadline))).first();

  return {
    async create(w, opts) {
      const id = uuidv7();
      const createdAt = new Date();
      // A fresh id: a second copy of this write is the same row.
      await exec(INSERT, [id, w.url, w.events, w.secret, createdAt], endpoints('write', opts?.deadline));
      return { id, url: w.url, events: [...w.events], secret: w.secret, createdAt: createdAt.toISOString() };
    },

    async list(opts) {
      return (await exec(LIST, [], endpoints('read', opts?.deadline))).rows.map(toWebhook);
    },

    async get(id, opts) {
      const row = await get(id, opts?.deadline);
      return row ? toWebhook(row) : undefined;
    },

    async remove(id, opts) {
      if (!(await get(id, opts?.deadline))) return false;
      await exec(DELETE, [id], endpoints('write', opts?.deadline));
      await exec(DELETE_DELIVERIES, [id], { kind: 'write', keys: [textKey(id)], idempotent: true, deadline: opts?.deadline });
      return true;
    },

    async recordDelivery(webhookId, d) {
      // A webhook deleted meanwhile: the attempt has nobody left to show it to.
      if (!(await get(webhookId))) return;
      await exec(RECORD, [webhookId, types.TimeUuid.now(), d.eventId, d.eventType, d.attempt, d.statusCode, d.error, new Date()], {
        kind: 'write', keys: [textKey(webhookId)], idempotent: true,
      });
    },

    async deliveries(webhookId, limit, opts) {
      if (!(await get(webhookId, opts?.deadline))) return undefined;
      const rs = await exec(DELIVERIES, [webhookId, limit], { kind: 'read', keys: [textKey(webhookId)], idempotent: true, deadline: opts?.deadline });
      return rs.rows.map((r): Delivery => ({
        eventId: String(r.get('event_id')), eventType: r.get('event_type') as EventType, attempt: r.get('attempt') as number,
        statusCode: r.get('status_code') as number | null, error: r.get('error') as string | null,
        at: (r.get('at') as Date).toISOString(),
      }));
    },
  };
}
