/**
 * The Cassandra accounts adapter (src/db/cassandra/accounts.ts) against the shared AccountsStore contract, on
 * a real Cassandra 2.1 node started for this file, then what is particular to it: the lightweight transactions
 * under load, the email claim, writes that must never recreate a deleted row, listings that skip ids left behind,
 * and pruning by expiry hour. Without Java everything here is skipped with the reason, except under CI=true.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import type { AccountsStore } from '../src/db/accounts-store.ts';
import { STALE_CLAIM_MS, createCassandraAccountsStore } from '../src/db/cassandra/accounts.ts';
import { createSchema, type Schema } from '../src/db/cassandra/schema.ts';
import { createSession, type Session } from '../src/db/cassandra/session.ts';
import { isAppError } from '../src/platform/errors.ts';
import { accountsContract } from './auth-accounts.contract.ts';
import { exitWhenDone, skipReason } from './support/backends.ts';
import { LOCAL_DATA_CENTER, startCassandraNode, type CassandraNode } from '../tools/cassandra-harness/index.ts';

exitWhenDone();

const skip = skipReason('cassandra');
const quiet = { info: () => {}, warn: () => {} };
let node: CassandraNode | undefined;
let session: Session;
let repo: AccountsStore;
let schema: Schema;
const keyspace = `spate_accounts_${process.pid}`;

let n = 0;
const email = (tag = 'k') => `${tag}${++n}.${Date.now()}@example.com`;
const hex = () => randomUUID().replace(/-/g, '') + randomUUID().replace(/-/g, '');
const inAMinute = () => new Date(Date.now() + 60_000);
/** The test's own reads and writes, beside the code under test. */
const cql = async (text: string, params: unknown[] = []) =>
  (await session.client.execute(text.replaceAll('ks.', `"${keyspace}".`), params, { prepare: true })).rows;

const sessionOn = (on: CassandraNode, ks: string, onQuery?: () => void) => createSession({
  hosts: [on.host], port: on.cqlPort, keyspace: ks, localDc: LOCAL_DATA_CENTER,
  readConsistency: 'LOCAL_QUORUM', writeConsistency: 'LOCAL_QUORUM', serialConsistency: 'LOCAL_SERIAL',
  requestTimeoutMs: 12_000, failFast: true, protocolVersion: 3, log: quiet, onQuery,
});

before(async () => {
  if (skip) return;
  node = await startCassandraNode();
  session = sessionOn(node, keyspace);
  // As openCassandra does: one schema for the users and the accounts tables, one session for both repositories.
  schema = createSchema(session, { strategy: 'SimpleStrategy', factor: 1 });
  await schema.ensure();
  repo = createCassandraAccountsStore(session, schema);
});
after(async () => {
  await repo?.close();
  await session?.close();
  await node?.stop();
});

accountsContract('cassandra', () => repo, skip);

describe('cassandra accounts adapter', { skip }, () => {
  test('the schema: a second start finds every table and index and changes nothing; a foreign accounts table is refused', async (t) => {
    let statements = 0;
    const again = sessionOn(node!, keyspace, () => { statements++; });
    t.after(() => again.close());
    await createSchema(again, { strategy: 'SimpleStrategy', factor: 1 }).ensure();
    assert.equal(statements, 0, 'no DDL on an existing keyspace');

    const foreign = `spate_foreign_${process.pid}`;
    await session.client.execute(`CREATE KEYSPACE "${foreign}" WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}`);
    await session.client.execute(`CREATE TABLE "${foreign}".accounts (id uuid PRIMARY KEY, email text)`);
    const other = sessionOn(node!, foreign);
    t.after(() => other.close());
    await assert.rejects(createSchema(other, { strategy: 'SimpleStrategy', factor: 1 }).ensure(),
      /accounts exists but lacks columns password_hash, role, disabled, created_at, updated_at, write_id/);
  });

  test('ten concurrent refreshes with one token: exactly one first use', async () => {
    const a = await repo.createAccount({ email: email(), passwordHash: 'h', role: 'viewer' });
    const token = hex();
    await repo.createSession({ accountId: a.id, tokenHash: token, expiresAt: inAMinute() });
    const all = await Promise.all(Array.from({ length: 10 }, () => repo.consumeRefreshToken(token)));
    assert.equal(all.filter((c) => c?.firstUse === true).length, 1, JSON.stringify(all));
    assert.equal(all.filter((c) => c?.firstUse === false).length, 9);
  });

  test('conditional writes sent twice (the answer to the first lost, the driver retries) still report their own success', async () => {
    // The one failure forced at the edge: every lightweight transaction reaches the server twice, and the caller
    // gets the second answer, which finds the first one's work done.
    const twice: Session = {
      ...session,
      async execute(text, params, o) {
        if (o.kind === 'cas') await session.execute(text, params, o);
        return session.execute(text, params, o);
      },
    };
    const r = createCassandraAccountsStore(twice, schema);
    const a = await r.createAccount({ email: email('twice'), passwordHash: 'h', role: 'viewer' });
    assert.equal((await r.getAccount(a.id))?.id, a.id);
    const token = hex();
    const s = await r.createSession({ accountId: a.id, tokenHash: token, expiresAt: inAMinute() });
    assert.equal((await r.consumeRefreshToken(token))?.firstUse, true, 'our own use, not a replay');
    assert.equal((await r.consumeRefreshToken(token))?.firstUse, false);
    assert.deepEqual(await r.revokeAccountSessions(a.id), [s.id], 'the revoked session is reported, to be invalidated');
    assert.equal((await r.updateAccount(a.id, { disabled: true }))?.disabled, true);
    const k = await r.createApiKey({ accountId: a.id, name: 'k', prefix: 'spk_t', hash: hex(), scopes: ['users:read'], expiresAt: null });
    assert.equal(await r.revokeApiKey(k.id), true);
  });

  test('five concurrent registrations of one email in different cases: exactly one account', async () => {
    const e = email('Race');
    const variants = [e, e.toUpperCase(), e.toLowerCase(), `${e[0]!.toLowerCase()}${e.slice(1).toUpperCase()}`, e];
    const results = await Promise.allSettled(variants.map((v) => repo.createAccount({ email: v, passwordHash: 'h', role: 'viewer' })));
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
    for (const r of results) if (r.status === 'rejected') assert.ok(isAppError(r.reason) && r.reason.code === 'EMAIL_TAKEN', String(r.reason));
    const claims = await cql('SELECT account_id FROM ks.accounts_by_email WHERE email_lower = ?', [e.toLowerCase()]);
    assert.equal(claims.length, 1);
  });

  test('an email claim whose account never appeared is taken over once stale, and refused while young', async () => {
    const young = email('young').toLowerCase();
    const stale = email('stale').toLowerCase();
    await cql('INSERT INTO ks.accounts_by_email (email_lower, account_id, claimed_at) VALUES (?, ?, ?)', [young, randomUUID(), new Date()]);
    await cql('INSERT INTO ks.accounts_by_email (email_lower, account_id, claimed_at) VALUES (?, ?, ?)',
      [stale, randomUUID(), new Date(Date.now() - STALE_CLAIM_MS - 1000)]);
    await assert.rejects(repo.createAccount({ email: young, passwordHash: 'h', role: 'viewer' }),
      (err) => isAppError(err) && err.code === 'EMAIL_TAKEN', 'a creation may still be under way');
    const a = await repo.createAccount({ email: stale, passwordHash: 'h', role: 'viewer' });
    assert.equal((await repo.findAccountByEmail(stale))?.id, a.id);
  });

  test('a deleted account frees its email; updates and revocations after a deletion recreate nothing', async () => {
    const e = email();
    const a = await repo.createAccount({ email: e, passwordHash: 'h', role: 'admin' });
    const token = hex();
    const s = await repo.createSession({ accountId: a.id, tokenHash: token, expiresAt: inAMinute() });
    const keyHash = hex();
    const k = await repo.createApiKey({ accountId: a.id, name: 'k', prefix: 'spk_d', hash: keyHash, scopes: [], expiresAt: null });
    assert.deepEqual(k.scopes, []);
    assert.deepEqual((await repo.getApiKey(k.id))?.scopes, [], 'an empty list reads back as one');
    assert.equal(await repo.deleteAccount(a.id), true);

    assert.equal(await repo.updateAccount(a.id, { role: 'viewer' }), null);
    assert.equal(await repo.revokeApiKey(k.id), false);
    await repo.revokeSession(s.id);
    assert.equal((await cql('SELECT id FROM ks.accounts WHERE id = ?', [a.id])).length, 0, 'no row remade by the update');
    assert.equal((await cql('SELECT id FROM ks.api_keys WHERE id = ?', [k.id])).length, 0, 'no key remade by the revocation');
    assert.equal((await cql('SELECT id FROM ks.auth_sessions WHERE id = ?', [s.id])).length, 0, 'no session remade');
    assert.equal(await repo.consumeRefreshToken(token), null);
    assert.equal(await repo.findApiKeyByHash(keyHash), null);
    assert.equal((await repo.listAccounts({ limit: 1000 })).some((x) => x.id === a.id), false);

    const again = await repo.createAccount({ email: e.toUpperCase(), passwordHash: 'h2', role: 'viewer' });
    assert.equal((await repo.findAccountByEmail(e))?.id, again.id);
  });

  test('input PostgreSQL would refuse is badInput here too, and writes nothing', async () => {
    const badInput = (err: unknown) => isAppError(err) && err.code === 'BAD_INPUT';
    const nul = `nul\0${email()}`;
    await assert.rejects(repo.createAccount({ email: nul, passwordHash: 'h', role: 'viewer' }), badInput);
    await assert.rejects(repo.createAccount({ email: `${'x'.repeat(250)}@example.com`, passwordHash: 'h', role: 'viewer' }), badInput);
    await assert.rejects(repo.createAccount({ email: email(), passwordHash: 'h', role: 'root' as 'admin' }), badInput);
    assert.equal((await cql('SELECT account_id FROM ks.accounts_by_email WHERE email_lower = ?', [nul.toLowerCase()])).length, 0, 'no claim left');
    const a = await repo.createAccount({ email: email(), passwordHash: 'h', role: 'viewer' });
    await assert.rejects(repo.updateAccount(a.id, { role: 'root' as 'admin' }), badInput);
    assert.equal((await repo.getAccount(a.id))?.role, 'viewer');
    await assert.rejects(repo.createApiKey({ accountId: a.id, name: '', prefix: 'spk_x', hash: hex(), scopes: [], expiresAt: null }), badInput);
    assert.deepEqual(await repo.listApiKeys(a.id), []);
  });

  test('listings walk every account once in id order, skipping ids whose account is gone', async () => {
    const made = [];
    for (let i = 0; i < 5; i++) made.push(await repo.createAccount({ email: email('page'), passwordHash: 'h', role: 'viewer' }));
    // An id listed without its account: what a creation that died after listing the id leaves behind.
    const ghost = made[2]!.id.slice(0, -1) + (made[2]!.id.endsWith('f') ? 'e' : 'f');
    await cql('INSERT INTO ks.account_ids (shard, id) VALUES (0, ?)', [ghost]);
    // A page shorter than asked for is the last: a skipped id must not end the walk early.
    const seen: string[] = [];
    let page;
    do {
      page = await repo.listAccounts({ limit: 2, after: seen.at(-1) });
      seen.push(...page.map((a) => a.id));
    } while (page.length === 2);
    assert.deepEqual(seen, [...seen].sort(), 'oldest (lowest id) first');
    assert.equal(new Set(seen).size, seen.length, 'no account twice');
    for (const a of made) assert.ok(seen.includes(a.id), `${a.id} listed`);
    assert.ok(!seen.includes(ghost));
  });

  test('countActiveAdmins counts enabled admins only, through role changes', async () => {
    const before = await repo.countActiveAdmins();
    const a = await repo.createAccount({ email: email(), passwordHash: 'h', role: 'viewer' });
    await repo.updateAccount(a.id, { role: 'admin' });
    assert.equal(await repo.countActiveAdmins(), before + 1);
    await repo.updateAccount(a.id, { role: 'editor' });
    assert.equal(await repo.countActiveAdmins(), before);
  });

  test('pruning removes a past hour it has drained from the hours still to visit', async () => {
    const a = await repo.createAccount({ email: email(), passwordHash: 'h', role: 'viewer' });
    const twoHoursAgo = new Date(Date.now() - 2 * 3_600_000);
    const hour = Math.floor(twoHoursAgo.getTime() / 3_600_000);
    await repo.createSession({ accountId: a.id, tokenHash: hex(), expiresAt: twoHoursAgo });
    assert.equal((await cql('SELECT hour FROM ks.refresh_token_expiry_hours WHERE shard = 0 AND hour = ?', [hour])).length, 1);
    while ((await repo.pruneExpired(new Date(), 100)).tokens > 0);
    assert.equal((await cql('SELECT hour FROM ks.refresh_token_expiry_hours WHERE shard = 0 AND hour = ?', [hour])).length, 0);
    assert.equal((await cql('SELECT token_hash FROM ks.refresh_tokens_by_expiry WHERE hour = ?', [hour])).length, 0);
  });

  test('pruning reads an hour on from where its last batch ended, not over the tombstones it left', async () => {
    const bounds: Date[] = [];
    const watched: Session = {
      ...session,
      execute(text, params, o) {
        if (text.includes('refresh_tokens_by_expiry') && text.startsWith('SELECT')) bounds.push(params[1] as Date);
        return session.execute(text, params, o);
      },
    };
    const r = createCassandraAccountsStore(watched, schema);
    const a = await r.createAccount({ email: email(), passwordHash: 'h', role: 'viewer' });
    const hourStart = (Math.floor(Date.now() / 3_600_000) - 3) * 3_600_000;
    const expiries = [10, 20, 30, 40, 50].map((ms) => new Date(hourStart + ms));
    await Promise.all(expiries.map((expiresAt) => r.createSession({ accountId: a.id, tokenHash: hex(), expiresAt })));
    assert.equal((await r.pruneExpired(new Date(hourStart + 3_600_000), 2)).tokens, 2);
    bounds.length = 0;
    assert.equal((await r.pruneExpired(new Date(hourStart + 3_600_000), 2)).tokens, 2);
    assert.deepEqual(bounds, [expiries[1]], 'the second batch starts at the last entry of the first');
    assert.equal((await r.pruneExpired(new Date(hourStart + 3_600_000), 2)).tokens, 1);
  });
});
