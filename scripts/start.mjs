/**
 * `npm start`: runs src/process/server.ts from an esbuild bundle, which plain Node loads in a fraction of the
 * time that compiling each module through tsx takes (figures in docs/startup.md).
 *
 * The bundle lives in node_modules/.cache/spate and is rebuilt whenever the sources it was built from changed
 * (a hash of their contents), so it is never stale and `npm start` stays the only command. npm packages stay
 * outside it, resolved from node_modules as before. Every file is written under a temporary name and renamed,
 * so servers starting side by side never read a half-written bundle. Cluster workers (which Node starts from
 * this same file) only load it.
 */
import cluster from 'node:cluster';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';

const root = join(import.meta.dirname, '..');
const outdir = join(root, 'node_modules/.cache/spate');
const entry = join(outdir, 'server.js');
const stamp = join(outdir, 'build.json');
/** A chunk no current build refers to is removed once it is this old (a server started just before may load it). */
const STALE_CHUNK_MS = 10 * 60_000;

/**
 * Hash of the launcher, of where the tree is (the bundle names its source files) and of every source file the
 * last build read; undefined if one of them is gone.
 */
function sourcesHash(inputs) {
  const hash = createHash('sha256').update(readFileSync(import.meta.filename)).update(root);
  try {
    for (const file of inputs) hash.update(file).update(readFileSync(join(root, file)));
  } catch {
    return undefined;
  }
  return hash.digest('hex');
}

function isFresh() {
  try {
    const { inputs, hash } = JSON.parse(readFileSync(stamp, 'utf8'));
    return sourcesHash(inputs) === hash;
  } catch {
    return false;
  }
}

function writeAtomically(path, contents) {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, contents);
  renameSync(tmp, path);
}

/**
 * npm packages stay external (resolved from node_modules at run time) except these: pure ES-module packages of
 * many small files, whose loading costs more than their code (typebox: 709 files, ~170 ms of CPU; bundled, ~20).
 */
const BUNDLED_PACKAGES = new Set(['typebox']);
const externalPackages = {
  name: 'external-packages',
  setup(build) {
    build.onResolve({ filter: /^[^./]/ }, ({ path }) => {
      const name = path.startsWith('@') ? path.split('/', 2).join('/') : path.split('/', 1)[0];
      return BUNDLED_PACKAGES.has(name) ? undefined : { path, external: true };
    });
  },
};

/**
 * Each source module keeps its own `import.meta.url`, so reads relative to a source file (the SQL migrations
 * beside src/db/postgres/migrate.ts) still find the source tree.
 */
const keepImportMetaUrl = {
  name: 'keep-import-meta-url',
  setup(build) {
    build.onLoad({ filter: /\/src\/.*\.ts$/ }, ({ path }) => {
      const source = readFileSync(path, 'utf8');
      const url = JSON.stringify(pathToFileURL(path).href);
      return { contents: source.replaceAll('import.meta.url', url), loader: 'ts' };
    });
  },
};

async function build() {
  const { build: esbuild } = await import('esbuild');
  const result = await esbuild({
    entryPoints: [join(root, 'src/process/server.ts')],
    absWorkingDir: root,
    outdir,
    bundle: true,
    // Code splitting keeps a dynamic import lazy: cassandra-driver loads only when Cassandra is the backend.
    splitting: true,
    format: 'esm',
    platform: 'node',
    target: 'node20.19',
    sourcemap: 'linked',
    sourcesContent: false,
    chunkNames: 'chunks/[name]-[hash]',
    metafile: true,
    write: false,
    logLevel: 'warning',
    plugins: [externalPackages, keepImportMetaUrl],
  });
  // Chunks first, the entry and the stamp last: a reader that sees the new entry finds every chunk it names.
  const files = result.outputFiles.sort((a, b) => Number(a.path === entry) - Number(b.path === entry));
  for (const file of files) writeAtomically(file.path, file.contents);
  // A bundled package stands in the hash by its manifest (its version), not by each of its hundreds of files.
  const sources = Object.keys(result.metafile.inputs).filter((p) => !p.startsWith('node_modules/'));
  const inputs = [...sources, ...[...BUNDLED_PACKAGES].map((name) => `node_modules/${name}/package.json`)].sort();
  writeAtomically(stamp, JSON.stringify({ inputs, hash: sourcesHash(inputs) }));
  pruneChunks(new Set(files.map((f) => f.path)));
}

function pruneChunks(current) {
  const dir = join(outdir, 'chunks');
  if (!existsSync(dir)) return;
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    // A server building beside this one may have removed it already.
    const age = Date.now() - (statSync(path, { throwIfNoEntry: false })?.mtimeMs ?? Date.now());
    if (!current.has(path) && age > STALE_CHUNK_MS) rmSync(path, { force: true });
  }
}

if (cluster.isPrimary && !isFresh()) await build();
if (process.argv.includes('--build-only')) process.exit(0);
process.setSourceMapsEnabled(true);
await import(pathToFileURL(entry).href);
