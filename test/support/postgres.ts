/**
 * A real PostgreSQL for a test file: a fresh database on the server at TEST_DATABASE_URL when that is set, else
 * an embedded server in a temporary directory. Either way the test owns it alone and it is removed afterwards.
 */
import { mkdtempSync, rmSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import postgres from 'postgres';
import { startEmbeddedPostgres, freePort, type EmbeddedPostgres } from '../../src/storage/postgres/embedded.ts';

export interface TestDatabase {
  url: string;
  /** Stops the server (embedded only): for database-failure tests. */
  stopServer(): Promise<void>;
  /** Starts it again on the same port and data. */
  startServer(): Promise<void>;
  /** Drops everything this helper created. */
  destroy(): Promise<void>;
}

export async function createTestDatabase(): Promise<TestDatabase> {
  const shared = process.env.TEST_DATABASE_URL;
  if (shared) {
    const name = `spate_test_${process.pid}_${Date.now().toString(36)}`;
    const admin = postgres(shared, { max: 1, onnotice: () => {} });
    await admin.unsafe(`CREATE DATABASE ${name}`);
    const url = new URL(shared);
    url.pathname = `/${name}`;
    const unsupported = async () => { throw new Error('stopServer/startServer need the embedded server (unset TEST_DATABASE_URL)'); };
    return {
      url: url.toString(),
      stopServer: unsupported,
      startServer: unsupported,
      async destroy() {
        await admin.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
        await admin.end();
      },
    };
  }
  const dir = mkdtempSync(join(tmpdir(), 'spate-pg-'));
  chmodSync(dir, 0o755); // as root the server runs as the postgres user, which must reach the directory
  const port = await freePort();
  let server: EmbeddedPostgres | undefined = await startEmbeddedPostgres(dir, () => {}, port);
  const url = server.url;
  return {
    url,
    async stopServer() {
      await server?.stop();
      server = undefined;
    },
    async startServer() {
      server ??= await startEmbeddedPostgres(dir, () => {}, port);
    },
    async destroy() {
      await server?.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
