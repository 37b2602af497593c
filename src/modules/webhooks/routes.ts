/**
 * The webhook routes (CONTRACT.md, "Webhooks"): register an endpoint (its signing secret shown once), list and
 * delete endpoints, and list an endpoint's delivery attempts. Admin only (src/modules/auth/policy.ts).
 */
import { randomBytes } from 'node:crypto';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import type { WebhooksConfig } from '../../platform/config.ts';
import { errors } from '../../platform/errors.ts';
import { DB_ERRORS, errorResponses } from '../../platform/http/error-schemas.ts';
import { parseUuid } from '../../platform/lib/uuid.ts';
import {
  DeliveriesQuery, DeliveryList, presentDelivery, presentWebhook, WebhookCreate, WebhookCreated, WebhookIdParams, WebhookList,
} from './webhook-schemas.ts';
import { refusedLiteral } from './ssrf.ts';

const tags = ['webhooks'];

function idOf(raw: string): string {
  const id = parseUuid(raw);
  if (id === null) throw errors.invalidUuid();
  return id;
}

/** The URL as it will be requested, or a 422 naming `body.url`. */
function checkedUrl(raw: string, config: WebhooksConfig): string {
  const bad = (msg: string, type = 'value_error.url') => errors.validation([{ loc: ['body', 'url'], msg, type }]);
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw bad('Input should be a valid URL');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw bad('URL scheme should be http or https');
  if (url.username || url.password) throw bad('URL should not carry credentials');
  // A private address literal can never be delivered to: say so now. Names are checked at each delivery.
  const refused = refusedLiteral(config.allowedHosts, url);
  if (refused) throw bad(refused.message, 'value_error.url.private');
  return url.toString();
}

export interface WebhooksRoutesOptions {
  config: WebhooksConfig;
}

const webhooksRoutes: FastifyPluginAsyncTypebox<WebhooksRoutesOptions> = async (app, { config }) => {

  app.post('/webhooks', {
    schema: {
      tags, summary: 'Register a webhook endpoint', body: WebhookCreate,
      description: 'The answer carries the signing secret (`whsec_...`); it is never shown again.',
      response: { 201: WebhookCreated, ...errorResponses(401, 403, 413, ...DB_ERRORS) },
    },
  }, async (request, reply) => {
    const url = checkedUrl(request.body.url, config);
    const secret = `whsec_${randomBytes(32).toString('base64')}`;
    const hook = await app.backend.webhooks.create({ url, events: request.body.events, secret }, request);
    return reply.code(201).header('location', `/webhooks/${hook.id}`).send({ ...presentWebhook(hook), secret: hook.secret });
  });

  app.get('/webhooks', {
    schema: {
      tags, summary: 'List webhook endpoints (without their secrets)',
      response: { 200: WebhookList, ...errorResponses(401, 403, ...DB_ERRORS) },
    },
  }, async (request) => (await app.backend.webhooks.list(request)).map(presentWebhook));

  app.delete('/webhooks/:id', {
    schema: {
      tags, summary: 'Delete a webhook endpoint and its delivery attempts; idempotent', params: WebhookIdParams,
      response: { 204: Type.Null({ description: 'Deleted, or there was none' }), ...errorResponses(400, 401, 403, ...DB_ERRORS) },
    },
  }, async (request, reply) => {
    await app.backend.webhooks.remove(idOf(request.params.id), request);
    return reply.code(204).send(null);
  });

  app.get('/webhooks/:id/deliveries', {
    schema: {
      tags, summary: "A webhook endpoint's delivery attempts, newest first", params: WebhookIdParams, querystring: DeliveriesQuery,
      response: { 200: DeliveryList, ...errorResponses(400, 401, 403, 404, ...DB_ERRORS) },
    },
  }, async (request) => {
    const found = await app.backend.webhooks.deliveries(idOf(request.params.id), request.query.limit, request);
    if (!found) throw errors.webhookNotFound();
    return found.map(presentDelivery);
  });
};

export default webhooksRoutes;
