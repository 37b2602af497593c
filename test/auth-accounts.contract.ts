/**
 * The contract every `AccountsStore` adapter passes (src/db/accounts-store.ts), run against a real
 * database by each adapter's test file (test/auth-accounts-postgres.test.ts, test/auth-accounts-cassandra.test.ts).
 *
 * Every adapter runs every case. What an adapter does differently from the others is listed in `DIFFERS` with the
 * reason and printed as a diagnostic, so nothing is left out silently.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, test } from 'node:test';
import type { AccountsStore } from '../src/db/accounts-store.ts';
import { isAppError } from '../src/platform/errors.ts';

/** Where an adapter keeps the contract differently, and why. docs/cassandra.md repeats it for users. */
export const DIFFERS: Record<string, Record<string, string>> = {
  postgres: {},
  cassandra: {
    atomicCascade:
      'deleting an account removes its sessions, tokens and keys statement by statement (Cassandra has no '
      + 'transaction across partitions): one that stops half-way leaves an account with fewer sessions or keys, never '
      + 'sessions or keys without their account, and deleting again finishes it. The suite checks the finished state.',
    isolatedCreate:
      'an email claim, the account row and its place in the listing are written one after another: for a moment '
      + 'during a registration the email is taken while a lookup by it finds nothing yet. Not observable by the suite.',
  },
};

let n = 0;
const email = (tag = 'c') => `${tag}${++n}.${Date.now()}@example.com`;
const hex = () => randomUUID().replace(/-/g, '') + randomUUID().replace(/-/g, '');

export function accountsContract(name: string, repo: () => AccountsStore, skip: string | false = false): void {
  describe(`AccountsStore contract: ${name}`, { skip }, () => {
    test('lists where this adapter differs, with the reason', (t) => {
      const differs = Object.entries(DIFFERS[name] ?? {});
      for (const [what, reason] of differs) t.diagnostic(`${what}: ${reason}`);
      if (differs.length === 0) t.diagnostic('nowhere: this adapter keeps every case of the contract as written');
    });

    test('accounts: create, get, find by email in any case, unique without regard to case', async () => {
      const r = repo();
      const e = email('Mixed');
      const a = await r.createAccount({ email: e, passwordHash: 'h1', role: 'editor' });
      assert.equal(a.email, e);
      assert.equal(a.role, 'editor');
      assert.equal(a.disabled, false);
      assert.ok(a.created_at instanceof Date);
      assert.deepEqual(await r.getAccount(a.id), a);
      const found = await r.findAccountByEmail(e.toUpperCase());
      assert.equal(found?.id, a.id);
      assert.equal(found?.passwordHash, 'h1');
      await assert.rejects(r.createAccount({ email: e.toLowerCase(), passwordHash: 'h2', role: 'viewer' }),
        (err) => isAppError(err) && err.code === 'EMAIL_TAKEN');
      assert.equal(await r.getAccount(randomUUID()), null);
      assert.equal(await r.findAccountByEmail('nobody@example.com'), null);
    });

    test('accounts: update, list by id, count admins, delete with sessions and keys', async () => {
      const r = repo();
      const a = await r.createAccount({ email: email(), passwordHash: 'h', role: 'admin' });
      const admins = await r.countActiveAdmins();
      const u = await r.updateAccount(a.id, { disabled: true, passwordHash: 'h2' });
      assert.equal(u?.disabled, true);
      assert.equal(u?.role, 'admin');
      assert.ok(u!.updated_at.getTime() > a.updated_at.getTime());
      assert.equal(await r.countActiveAdmins(), admins - 1);
      assert.equal((await r.findAccountByEmail(a.email))?.passwordHash, 'h2');
      assert.equal(await r.updateAccount(randomUUID(), { role: 'viewer' }), null);
      const page = await r.listAccounts({ limit: 1000 });
      assert.ok(page.some((x) => x.id === a.id));
      const after = await r.listAccounts({ limit: 1000, after: a.id });
      assert.ok(after.every((x) => x.id > a.id));
      const s = await r.createSession({ accountId: a.id, tokenHash: hex(), expiresAt: new Date(Date.now() + 60_000) });
      await r.createApiKey({ accountId: a.id, name: 'k', prefix: 'spk_x', hash: hex(), scopes: ['users:read'], expiresAt: null });
      assert.equal(await r.deleteAccount(a.id), true);
      assert.equal(await r.deleteAccount(a.id), false);
      assert.equal(await r.getSession(s.id), null);
      assert.deepEqual(await r.listApiKeys(a.id), []);
    });

    test('refresh tokens: consume marks used once; a second consume reports the reuse; sessions revoke', async () => {
      const r = repo();
      const a = await r.createAccount({ email: email(), passwordHash: 'h', role: 'viewer' });
      const first = hex();
      const s = await r.createSession({ accountId: a.id, tokenHash: first, expiresAt: new Date(Date.now() + 60_000) });
      assert.deepEqual(await r.getSession(s.id), { id: s.id, accountId: a.id, revoked: false });
      const c1 = await r.consumeRefreshToken(first);
      assert.equal(c1?.firstUse, true);
      assert.equal(c1?.sessionId, s.id);
      assert.equal(c1?.accountId, a.id);
      assert.equal(c1?.sessionRevoked, false);
      const c2 = await r.consumeRefreshToken(first);
      assert.equal(c2?.firstUse, false);
      const next = hex();
      await r.addRefreshToken({ sessionId: s.id, tokenHash: next, expiresAt: new Date(Date.now() + 60_000) });
      // Concurrent consumers of one token: exactly one first use.
      const both = await Promise.all([r.consumeRefreshToken(next), r.consumeRefreshToken(next)]);
      assert.deepEqual(both.map((x) => x?.firstUse).sort(), [false, true]);
      await r.revokeSession(s.id);
      assert.equal((await r.getSession(s.id))?.revoked, true);
      assert.equal(await r.consumeRefreshToken(hex()), null);
      const s2 = await r.createSession({ accountId: a.id, tokenHash: hex(), expiresAt: new Date(Date.now() + 60_000) });
      assert.deepEqual(await r.revokeAccountSessions(a.id), [s2.id]);
    });

    test('pruning deletes expired tokens and the sessions they leave empty, in batches; live and used tokens stay', async () => {
      const r = repo();
      const a = await r.createAccount({ email: email(), passwordHash: 'h', role: 'viewer' });
      const past = new Date(Date.now() - 1000);
      const future = new Date(Date.now() + 60_000);
      const dead = await Promise.all([1, 2, 3].map(() => r.createSession({ accountId: a.id, tokenHash: hex(), expiresAt: past })));
      // A session with an expired token and a live one (a rotation): only the expired token goes.
      const rotated = await r.createSession({ accountId: a.id, tokenHash: hex(), expiresAt: past });
      const live = hex();
      await r.addRefreshToken({ sessionId: rotated.id, tokenHash: live, expiresAt: future });
      // A used token that has not expired stays, so a replay of it is still recognised.
      const used = hex();
      const kept = await r.createSession({ accountId: a.id, tokenHash: used, expiresAt: future });
      assert.equal((await r.consumeRefreshToken(used))?.firstUse, true);

      const first = await r.pruneExpired(new Date(), 2);
      assert.ok(first.tokens === 2, `a batch of 2 deleted ${first.tokens} tokens`);
      let total = { ...first };
      for (let i = 0; i < 5; i++) {
        const more = await r.pruneExpired(new Date(), 2);
        total = { tokens: total.tokens + more.tokens, sessions: total.sessions + more.sessions };
      }
      // Other tests' sessions may expire meanwhile, so at least ours: four expired tokens, three emptied sessions.
      assert.ok(total.tokens >= 4 && total.sessions >= 3, JSON.stringify(total));
      for (const s of dead) assert.equal(await r.getSession(s.id), null);
      assert.equal((await r.getSession(rotated.id))?.revoked, false);
      assert.equal((await r.consumeRefreshToken(live))?.firstUse, true);
      assert.equal((await r.getSession(kept.id))?.revoked, false);
      assert.equal((await r.consumeRefreshToken(used))?.firstUse, false, 'the replay is still recognised');
    });

    test('API keys: create, find by hash, list, get, revoke idempotently', async () => {
      const r = repo();
      const a = await r.createAccount({ email: email(), passwordHash: 'h', role: 'editor' });
      const hash = hex();
      const expiresAt = new Date(Date.now() + 3_600_000);
      const k = await r.createApiKey({ accountId: a.id, name: 'ci', prefix: 'spk_abc', hash, scopes: ['users:read', 'users:write'], expiresAt });
      assert.equal(k.accountId, a.id);
      assert.deepEqual(k.scopes, ['users:read', 'users:write']);
      assert.equal(k.expires_at?.getTime(), expiresAt.getTime());
      assert.equal(k.revoked_at, null);
      assert.deepEqual(await r.findApiKeyByHash(hash), k);
      assert.deepEqual(await r.getApiKey(k.id), k);
      assert.deepEqual((await r.listApiKeys(a.id)).map((x) => x.id), [k.id]);
      assert.equal(await r.findApiKeyByHash(hex()), null);
      assert.equal(await r.revokeApiKey(k.id), true);
      assert.equal(await r.revokeApiKey(k.id), true);
      assert.ok((await r.findApiKeyByHash(hash))?.revoked_at instanceof Date);
      assert.equal(await r.revokeApiKey(randomUUID()), false);
    });
  });
}
