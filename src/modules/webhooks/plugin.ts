/**
 * The webhooks plugin (docs/webhooks.md): defines the delivery job, runs the outbox relay where job workers run
 * (ROLE all or worker), and counts delivery outcomes per event type. The routes are in routes.ts.
 */
import fp from 'fastify-plugin';
import { Counter } from 'prom-client';
import type { WebhooksStore } from '../../db/events-store.ts';
import type { JobsConfig, WebhooksConfig } from '../../platform/config.ts';
import type { JobDefinition } from '../../platform/jobs/runner.ts';
import { attempt, type AttemptOutcome } from './deliver.ts';
import { DELIVER_KIND, startRelay, type DeliveryPayload, type Relay } from './relay.ts';

export interface WebhooksPluginOptions {
  webhooks: WebhooksConfig;
  /** The relay runs with the workers (ROLE all or worker). */
  jobs: Pick<JobsConfig, 'role'>;
}

/** The body of a delivery: `data` in the User's field order (the outbox keeps it as jsonb, which sorts keys). */
export function deliveryBody({ event }: DeliveryPayload): string {
  const d = event.data as Record<string, unknown>;
  const data = event.type === 'user.deleted'
    ? { id: d.id }
    : { id: d.id, name: d.name, email: d.email, age: d.age, created_at: d.created_at, updated_at: d.updated_at };
  return JSON.stringify({ type: event.type, timestamp: event.occurredAt, data });
}

interface DeliveryCounters {
  attempted(eventType: string, outcome: AttemptOutcome, last: boolean): void;
}

function deliveryJob(store: () => WebhooksStore, config: WebhooksConfig, count: DeliveryCounters): JobDefinition {
  return {
    kind: DELIVER_KIND,
    backoff: config.retry,
    async run(raw, ctx) {
      const payload = raw as DeliveryPayload;
      const hook = await store().get(payload.webhookId);
      // Deleted since the event: nobody to deliver to.
      if (!hook) return { skipped: 'webhook deleted' };
      const { event } = payload;
      const r = await attempt({
        url: hook.url, secret: hook.secret, eventId: event.id, body: deliveryBody(payload),
        timeoutMs: config.timeoutMs, allowed: config.allowedHosts, signal: ctx.signal,
      });
      count.attempted(event.type, r.outcome, ctx.job.attempts >= ctx.job.maxAttempts);
      await store().recordDelivery(hook.id, {
        eventId: event.id, eventType: event.type, attempt: ctx.job.attempts, statusCode: r.statusCode, error: r.error,
      });
      if (r.outcome !== 'success') throw new Error(r.error ?? r.outcome);
      return { status_code: r.statusCode };
    },
  };
}

export default fp<WebhooksPluginOptions>(
  async (app, { webhooks: config, jobs: jobsConfig }) => {
    const registers = [app.metrics.registry];
    const attempts = new Counter({
      name: 'webhook_delivery_attempts_total',
      help: 'Webhook delivery attempts by event type and outcome (success, http_error, timeout, refused, network_error)',
      labelNames: ['event_type', 'outcome'], registers,
    });
    const deliveries = new Counter({
      name: 'webhook_deliveries_total',
      help: 'Webhook deliveries ended, by event type and outcome (delivered, or failed after the last attempt)',
      labelNames: ['event_type', 'outcome'], registers,
    });
    const count: DeliveryCounters = {
      attempted(eventType, outcome, last) {
        attempts.inc({ event_type: eventType, outcome });
        if (outcome === 'success') deliveries.inc({ event_type: eventType, outcome: 'delivered' });
        else if (last) deliveries.inc({ event_type: eventType, outcome: 'failed' });
      },
    };
    app.jobs.define(deliveryJob(() => app.backend.webhooks, config, count));

    let relay: Relay | undefined;
    app.addHook('onReady', async () => {
      const { outbox, webhooks, jobs } = app.backend;
      if (jobsConfig.role === 'api' || !jobs) return;
      relay = startRelay({ outbox, webhooks, jobs, maxAttempts: config.maxAttempts, pollMs: config.outboxPollMs, log: app.log });
    });
    app.addHook('onClose', async () => { await relay?.stop(); });
  },
  { name: 'webhooks', dependencies: ['backend', 'jobs', 'metrics'] },
);
