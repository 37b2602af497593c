/**
 * The PostgreSQL accounts adapter against the shared AccountsRepository contract, on a real database.
 */
import { after, before } from 'node:test';
import type { AccountsRepository } from '../src/auth/accounts-repository.ts';
import { createPostgresAccountsRepository } from '../src/auth/postgres/accounts.ts';
import { createDb } from '../src/storage/postgres/db.ts';
import { migrate } from '../src/storage/postgres/migrate.ts';
import { accountsContract } from './auth-accounts.contract.ts';
import { createTestDatabase, type TestDatabase } from './support/postgres.ts';

let db: TestDatabase;
let repo: AccountsRepository;

before(async () => {
  db = await createTestDatabase();
  const pool = createDb({ url: db.url, max: 4, acquireTimeoutMs: 2000, statementTimeoutMs: 10_000 });
  await migrate(pool.sql);
  repo = createPostgresAccountsRepository(pool);
});
after(async () => {
  await repo?.close();
  await db?.destroy();
});

accountsContract('postgres', () => repo);
