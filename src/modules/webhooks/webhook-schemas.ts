/**
 * The Webhook resources of the API (CONTRACT.md, "Webhooks"): their public shapes, the presenters, and the
 * schemas of the webhook routes.
 */
import { Type, type Static } from 'typebox';
import { EVENT_TYPES, type Delivery, type Webhook } from '../../db/events-store.ts';

const Timestamp = Type.Unsafe<string>({ type: 'string', format: 'date-time', examples: ['2024-01-10T12:34:56.789Z'] });
const EventTypeSchema = Type.Unsafe<(typeof EVENT_TYPES)[number]>({ type: 'string', enum: EVENT_TYPES });

export const WebhookCreate = Type.Object({
  url: Type.String({ minLength: 1, maxLength: 2048, description: 'http:// or https:// URL that receives the deliveries' }),
  events: Type.Array(EventTypeSchema, { minItems: 1, maxItems: EVENT_TYPES.length, uniqueItems: true }),
});

const fields = {
  id: Type.String({ format: 'uuid' }),
  url: Type.String(),
  events: Type.Array(EventTypeSchema),
  created_at: Timestamp,
};

export const WebhookPublic = Type.Object(fields, { title: 'Webhook' });
export type WebhookPublic = Static<typeof WebhookPublic>;

export const WebhookCreated = Type.Object(
  { ...fields, secret: Type.String({ pattern: '^whsec_', description: 'The signing secret; shown only in this answer' }) },
  { title: 'WebhookCreated' },
);

export const WebhookList = Type.Array(WebhookPublic);

export const DeliveryPublic = Type.Object(
  {
    event_id: Type.String({ format: 'uuid' }),
    event_type: EventTypeSchema,
    attempt: Type.Integer({ minimum: 1 }),
    status_code: Type.Union([Type.Integer(), Type.Null()]),
    error: Type.Union([Type.String(), Type.Null()]),
    at: Timestamp,
  },
  { title: 'WebhookDelivery' },
);
export const DeliveryList = Type.Array(DeliveryPublic);

export const WebhookIdParams = Type.Object({ id: Type.String({ description: 'Webhook id (UUID, any case)' }) });
export const DeliveriesQuery = Type.Object({ limit: Type.Integer({ minimum: 1, maximum: 1000, default: 100 }) });

export const presentWebhook = (w: Webhook): WebhookPublic => ({ id: w.id, url: w.url, events: w.events, created_at: w.createdAt });

export const presentDelivery = (d: Delivery): Static<typeof DeliveryPublic> => ({
  event_id: d.eventId, event_type: d.eventType, attempt: d.attempt, status_code: d.statusCode, error: d.error, at: d.at,
});
