/**
 * Server-side request forgery (docs/webhooks.md): without WEBHOOK_ALLOWED_HOSTS, webhooks never reach a
 * private, loopback or link-local address, whether the URL names the address (refused at registration, and at
 * delivery for a row registered under another allow-list) or a host that resolves to one (refused at delivery,
 * before any connection). The test receiver listens on loopback and must receive nothing.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { loadConfig } from '../src/platform/config.ts';
import { isAllowed, isPrivateAddress } from '../src/modules/webhooks/ssrf.ts';
import { appOnNewDatabase, userBody } from './support/app.ts';
import { waitFor } from './jobs-support.ts';
import { startReceiver, WEBHOOK_TEST_ENV, type Receiver } from './webhooks-support.ts';

const { WEBHOOK_ALLOWED_HOSTS: _, ...NO_ALLOW_LIST } = WEBHOOK_TEST_ENV;
const ctx = appOnNewDatabase(NO_ALLOW_LIST);
let rx: Receiver;
before(async () => { rx = await startReceiver(); });
after(async () => rx.close());

const inject = (method: 'GET' | 'POST', url: string, payload?: object) => ctx.app.inject({ method, url, ...(payload ? { payload } : {}) });

test('addresses: private, loopback, link-local and special ranges are refused; public ones are not', () => {
  const refused = ['127.0.0.1', '127.9.9.9', '10.0.0.1', '10.255.255.255', '172.16.0.1', '172.31.255.1', '192.168.1.1',
    '169.254.169.254', '100.64.0.1', '0.0.0.0', '224.0.0.1', '255.255.255.255', '::1', '::', 'fe80::1', 'fc00::1', 'fd12::1',
    '::ffff:127.0.0.1', '::ffff:10.0.0.1', '::ffff:169.254.169.254', 'not an address'];
  const allowed = ['93.184.216.34', '8.8.8.8', '172.32.0.1', '11.0.0.1', '2606:4700::1111', '::ffff:8.8.8.8'];
  for (const a of refused) assert.equal(isPrivateAddress(a), true, a);
  for (const a of allowed) assert.equal(isPrivateAddress(a), false, a);
  const list = loadConfig({ WEBHOOK_ALLOWED_HOSTS: 'Hooks.Internal, 127.0.0.1:8080,[::1]' }).webhooks.allowedHosts;
  assert.equal(isAllowed(list, new URL('http://hooks.internal/x')), true);
  assert.equal(isAllowed(list, new URL('http://127.0.0.1:8080/')), true);
  assert.equal(isAllowed(list, new URL('http://127.0.0.1:8081/')), false, 'a host:port entry allows that port only');
  assert.equal(isAllowed(list, new URL('http://[::1]:9/')), true);
  assert.throws(() => loadConfig({ WEBHOOK_ALLOWED_HOSTS: 'http://x/' }), /WEBHOOK_ALLOWED_HOSTS entry 'http:\/\/x\/'/);
});

test('registration refuses URLs that name a private, loopback or link-local address, and stores nothing', async () => {
  for (const url of [rx.url('/x'), 'http://10.1.2.3/hook', 'http://169.254.169.254/latest/meta-data', 'http://[::1]:8080/',
    'http://[::ffff:127.0.0.1]/', 'http://192.168.0.10/', 'http://0.0.0.0:80/']) {
    const res = await inject('POST', '/webhooks', { url, events: ['user.created'] });
    assert.equal(res.statusCode, 422, `${url}: ${res.body}`);
    const [issue] = res.json<{ detail: { loc: string[]; msg: string; type: string }[] }>().detail;
    assert.deepEqual(issue!.loc, ['body', 'url']);
    assert.match(issue!.msg, /private, loopback or link-local address \(not in WEBHOOK_ALLOWED_HOSTS\)/);
  }
  assert.deepEqual((await inject('GET', '/webhooks')).json(), []);
});

test('at delivery: a host resolving to loopback, and private literals stored earlier, are refused without a request', async () => {
  const named = await inject('POST', '/webhooks', { url: `http://localhost:${rx.port}/named`, events: ['user.created'] });
  assert.equal(named.statusCode, 201, named.body);
  const namedId = named.json<{ id: string }>().id;
  // Rows as an instance with another allow-list would have registered them.
  const literal = [
    ['01a00000-0000-7000-8000-000000000001', 'http://10.0.0.1:9/hook'],
    ['01a00000-0000-7000-8000-000000000002', 'http://169.254.169.254/latest'],
    ['01a00000-0000-7000-8000-000000000003', rx.url('/literal')],
  ];
  for (const [id, url] of literal) {
    await ctx.sql`INSERT INTO webhooks (id, url, events, secret) VALUES (${id!}, ${url!}, '{user.created}', ${`whsec_${Buffer.alloc(32, 1).toString('base64')}`})`;
  }
  await inject('POST', '/users', userBody());
  const ids = [namedId, ...literal.map((l) => l[0]!)];
  const firstAttempts = async () => Promise.all(ids.map(async (id) =>
    (await inject('GET', `/webhooks/${id}/deliveries`)).json<{ attempt: number; status_code: null; error: string }[]>().at(-1)));
  const seen = await waitFor(async () => { const d = await firstAttempts(); return d.every(Boolean) ? d : undefined; }, 15_000);
  assert.match(seen[0]!.error, /^refused: localhost resolves to (127\.0\.0\.1|::1), which is a private, loopback or link-local address/);
  assert.match(seen[1]!.error, /^refused: 10\.0\.0\.1 is a private/);
  assert.match(seen[2]!.error, /^refused: 169\.254\.169\.254 is a private/);
  assert.match(seen[3]!.error, /^refused: 127\.0\.0\.1 is a private/);
  for (const d of seen) assert.equal(d!.status_code, null);
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(rx.received.length, 0, 'the receiver on loopback was never reached');
  const text = (await inject('GET', '/metrics/prometheus')).body;
  assert.match(text, /^webhook_delivery_attempts_total\{event_type="user.created",outcome="refused"\} [1-9]\d*$/m);
});
