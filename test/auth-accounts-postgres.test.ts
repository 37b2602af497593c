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
import { createDb } from '../src/db/postgres/db.ts';
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
