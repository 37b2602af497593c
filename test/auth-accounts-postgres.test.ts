/**
 * The PostgreSQL accounts adapter against the shared AccountsStore contract, on a real database, and the
 * background job that prunes expired refresh tokens through it (src/modules/auth/prune.ts).
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import pino from 'pino';
import type { AccountsStore } from '../src/db/accounts-store.ts';
import { createPostgresAccountsStore } from '../src/db/postgres/accounts.ts';
import { startPruning } from '../src/modules/auth/prune.ts';
import postgres from 'postgres';
import { createDb, type Db } from '../src/db/postgres/db.ts';
import { migrate } from '../src/db/postgres/migrate.ts';
import { accountsContract } from './auth-accounts.contract.ts';
import { createTestDatabase, type TestDatabase } from './support/postgres.ts';

let db: TestDatabase;
let repo: AccountsStore;

const openRepo = () => createPostgresAccountsStore(createDb({ url: db.url, max: 4, acquireTimeoutMs: 2000, statementTimeoutMs: 10_000 }));

before(async () => {
  db = await createTestDatabase();
  const pool = createDb({ url: db.url, max: 4, acquireTimeoutMs: 2000, statementTimeoutMs: 10_000 });
  await migrate(pool.sql);
  repo = createPostgresAccountsStore(pool);
});
after(async () => {
  await repo?.close();
  await db?.destroy();
});

accountsContract('postgres', () => repo);

describe('pruning job', () => {
  test('a run repeats batches until nothing expired is left; a tick after a failure logs it and goes on', async () => {
    const a = await repo.createAccount({ email: `prune.${Date.now()}@example.com`, passwordHash: 'h', role: 'viewer' });
    const expired = await Promise.all(Array.from({ length: 7 }, () =>
      repo.createSession({ accountId: a.id, tokenHash: randomUUID(), expiresAt: new Date(Date.now() - 1000) })));
    const lines: { msg: string; tokens?: number }[] = [];
    const log = pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l)) });

    const pruner = startPruning({ accounts: repo, log, everyMs: 3_600_000, batch: 3 });
    try {
      const r = await pruner.run();
      assert.ok(r.tokens >= 7 && r.sessions >= 7, JSON.stringify(r));
      for (const s of expired) assert.equal(await repo.getSession(s.id), null);
      assert.deepEqual(await pruner.run(), { tokens: 0, sessions: 0 });
    } finally {
      pruner.stop();
    }

    // A closed pool is a real failure: every tick logs a warning and the job keeps ticking.
    const closed = openRepo();
    await closed.close();
    const failing = startPruning({ accounts: closed, log, everyMs: 20, batch: 3 });
    try {
      for (let i = 0; i < 100 && lines.filter((l) => l.msg.startsWith('pruning expired refresh tokens failed')).length < 2; i++) await sleep(20);
      assert.ok(lines.filter((l) => l.msg.startsWith('pruning expired refresh tokens failed')).length >= 2, JSON.stringify(lines));
    } finally {
      failing.stop();
    }
  });
});

describe('credential lookups that arrive together', () => {
  let pool: Db;
  let shared: AccountsStore;
  let other: postgres.Sql;
  let statements = 0;

  before(() => {
    pool = createDb({ url: db.url, max: 4, acquireTimeoutMs: 2000, statementTimeoutMs: 10_000, onQuery: () => void statements++ });
    shared = createPostgresAccountsStore(pool);
    other = postgres(db.url, { max: 2, onnotice: () => {} });
  });
  after(async () => {
    await shared?.close();
    await other?.end();
  });

  test('share one statement per account, session or key, and each caller gets its own answer', async () => {
    const a = await repo.createAccount({ email: `shared.${Date.now()}@example.com`, passwordHash: 'h', role: 'viewer' });
    const s = await repo.createSession({ accountId: a.id, tokenHash: randomUUID(), expiresAt: new Date(Date.now() + 60_000) });
    const hash = randomUUID().replaceAll('-', '');
    const k = await repo.createApiKey({ accountId: a.id, name: 'k', prefix: 'spk_shared', hash, scopes: [], expiresAt: null });
    const before = statements;
    const [accounts, sessions, keys, missing] = await Promise.all([
      Promise.all(Array.from({ length: 20 }, () => shared.getAccount(a.id))),
      Promise.all(Array.from({ length: 20 }, () => shared.getSession(s.id))),
      Promise.all(Array.from({ length: 20 }, () => shared.findApiKeyByHash(hash))),
      shared.getAccount(randomUUID()),
    ]);
    assert.ok(statements - before <= 4, `61 lookups took ${statements - before} statements`);
    for (const x of accounts) assert.equal(x?.email, a.email);
    for (const x of sessions) assert.deepEqual(x, { id: s.id, accountId: a.id, revoked: false });
    for (const x of keys) assert.equal(x?.id, k.id);
    assert.equal(missing, null);
    // A call with its own deadline reads alone, and finds the same row.
    const alone = statements;
    assert.equal((await shared.getAccount(a.id, { deadline: performance.now() + 5000 }))?.id, a.id);
    assert.equal(statements - alone, 1);
  });

  test('a lookup made once the shared statement has left reads again: it never gets an answer older than itself', async () => {
    const a = await repo.createAccount({ email: `fresh.${Date.now()}@example.com`, passwordHash: 'h', role: 'viewer' });
    const waiting = async () => (await other<{ n: number }[]>`SELECT count(*)::int AS n FROM pg_stat_activity
      WHERE wait_event_type = 'Lock' AND query LIKE '%FROM accounts WHERE id%'`)[0]!.n;
    // The table locked, so a statement that left waits at the server, visibly, until the lock goes.
    let unlock!: () => void;
    const released = new Promise<void>((r) => { unlock = r; });
    const locked = other.begin(async (tx) => {
      await tx`LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE`;
      await released;
    });
    await sleep(50);
    const first = shared.getAccount(a.id);
    for (let i = 0; i < 200 && await waiting() < 1; i++) await sleep(10);
    assert.equal(await waiting(), 1, 'the first lookup\'s statement is at the server');
    const second = shared.getAccount(a.id);
    for (let i = 0; i < 200 && await waiting() < 2; i++) await sleep(10);
    assert.equal(await waiting(), 2, 'the second lookup sent a statement of its own rather than joining one already sent');
    unlock();
    await locked;
    assert.equal((await first)?.id, a.id);
    assert.equal((await second)?.id, a.id);
  });
});
