/**
 * Versioned SQL migrations: the files in ./migrations, named `NNNN_name.sql`, applied in order.
 *
 * All pending files run in one transaction under an advisory lock, so several instances starting at once apply
 * each migration exactly once, and a failing migration leaves the schema as it was. Applied versions are
 * recorded in `spate_migrations`; nothing is ever dropped.
 */
import { readFileSync, readdirSync } from 'node:fs';
import type { Sql } from 'postgres';

interface Migration {
  version: number;
  name: string;
  sql: string;
}

const dir = new URL('./migrations/', import.meta.url);

function loadMigrations(): Migration[] {
  return readdirSync(dir)
    .filter((f) => /^\d{4}_[\w-]+\.sql$/.test(f))
    .sort()
    .map((f) => ({ version: Number(f.slice(0, 4)), name: f.slice(5, -4), sql: readFileSync(new URL(f, dir), 'utf8') }));
}

const migrations = loadMigrations();

/** The schema version this build expects. */
export const LATEST_VERSION = migrations.at(-1)?.version ?? 0;

/** Applies every pending migration; returns the names of those applied. */
export async function migrate(sql: Sql): Promise<string[]> {
  return sql.begin(async (tx) => {
    await tx`SELECT pg_advisory_xact_lock(hashtext('spate_migrations'))`;
    await tx`CREATE TABLE IF NOT EXISTS spate_migrations (
      version integer PRIMARY KEY,
      name text NOT NULL,
      applied_at timestamptz NOT NULL DEFAULT now()
    )`;
    const done = new Set((await tx<{ version: number }[]>`SELECT version FROM spate_migrations`).map((r) => r.version));
    const applied: string[] = [];
    for (const m of migrations) {
      if (done.has(m.version)) continue;
      await tx.unsafe(m.sql);
      await tx`INSERT INTO spate_migrations (version, name) VALUES (${m.version}, ${m.name})`;
      applied.push(`${m.version}_${m.name}`);
    }
    return applied;
  });
}

/** The highest applied version, or 0 when no migration has run. */
export async function schemaVersion(sql: Sql): Promise<number> {
  const [table] = await sql<{ ok: boolean }[]>`SELECT to_regclass('spate_migrations') IS NOT NULL AS ok`;
  if (!table?.ok) return 0;
  const [row] = await sql<{ v: number }[]>`SELECT coalesce(max(version), 0)::int AS v FROM spate_migrations`;
  return row?.v ?? 0;
}
