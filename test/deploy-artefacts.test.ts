/**
 * The deployment artefacts (docs/operations.md, "Deployment"), checked without a Docker engine or a cluster.
 *
 * The Dockerfile goes through a Dockerfile parser and linter (dockerfile-ast, dockerfile-utils), the compose file
 * through the Compose Specification's JSON schema, the Kubernetes manifests through Kubernetes' strict JSON schemas
 * (test/fixtures/README.md says where each schema comes from). Then the rules no schema knows: stages, a non-root
 * user, exec-form commands, one port everywhere, probes on the right paths, selectors that select, grace periods
 * longer than SHUTDOWN_TIMEOUT, and every variable one that src/platform/config.ts reads (and accepts).
 *
 * Each rule is a check that returns the problems it finds; the artefacts must have none, and a copy broken on
 * purpose must show the problem, so a rule that stops checking fails here too.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { isBuiltin } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ajv, type ValidateFunction } from 'ajv';
import { DockerfileParser, type Dockerfile } from 'dockerfile-ast';
import { validate as lintDockerfile } from 'dockerfile-utils';
import { parse as parseYaml } from 'yaml';
import { ConfigError, loadConfig } from '../src/platform/config.ts';
import { freePort } from '../src/db/embedded-postgres.ts';

const root = new URL('../', import.meta.url).pathname;
const read = (path: string) => readFileSync(join(root, path), 'utf8');
const pkg = JSON.parse(read('package.json')) as { scripts: Record<string, string>; dependencies: Record<string, string> };
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- parsed YAML is checked field by field below
type Doc = any;
const clone = <T>(v: T): T => structuredClone(v);

/** Every variable src/platform/config.ts reads: the keys of its `Env` schema, read from the source itself. */
const CONFIG_NAMES: ReadonlySet<string> = (() => {
  const source = read('src/platform/config.ts');
  const body = source.slice(source.indexOf('const Env = Type.Object({'), source.indexOf('\n});', source.indexOf('const Env')));
  return new Set([...body.matchAll(/^ {2}([A-Z][A-Z0-9_]*):/gm)].map((m) => m[1]!));
})();
/**
 * The OTEL_* variables honoured: those docs/tracing.md's table lists. config.ts reads the few that decide whether
 * tracing is on; the SDK reads the rest (headers, batching, resource) itself.
 */
const TRACING_NAMES: ReadonlySet<string> = new Set(read('docs/tracing.md').split('\n')
  .filter((line) => line.startsWith('| `OTEL_'))
  .flatMap((line) => [...line.split('|')[1]!.matchAll(/`(OTEL_[A-Z0-9_]+)`/g)].map((m) => m[1]!)));
const unknownNames = (names: Iterable<string>) => [...names].filter((n) => !CONFIG_NAMES.has(n) && !TRACING_NAMES.has(n));
/** A collector as an operator would name it, for the places that take one from the operator. */
const SHELL_TRACING = { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://otel-collector:4318', OTEL_SERVICE_NAME: 'spate', OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: '0.1' };

/** A secret that config.ts accepts (long, random), for the places where an artefact asks the operator for one. */
const SECRET = 'Qm9hdC1ob3VzZS1ydW5uaW5nLWZlcm4tNDIyNy1xdWlldC1tYXBsZQ';

// ---------------------------------------------------------------------------------------------------------------
// Dockerfile

interface Image {
  df: Dockerfile;
  /** The final stage's environment (ENV), as the service sees it. */
  env: Record<string, string>;
  port: number;
  cmd: string[];
  entrypoint: string[];
  /** The HEALTHCHECK's command, if it is in exec form. */
  healthcheck: string[];
}

function parseDockerfile(text: string): Image {
  const df = DockerfileParser.parse(text);
  const finalFrom = df.getFROMs().at(-1)!.getRange().start.line;
  const inFinalStage = <T extends { getRange(): { start: { line: number } } }>(list: T[]) =>
    list.filter((i) => i.getRange().start.line >= finalFrom);
  const env: Record<string, string> = {};
  for (const p of inFinalStage(df.getENVs()).flatMap((e) => e.getProperties())) env[p.getName()] = p.getValue() ?? '';
  const lastExecForm = (list: { getArgumentsContent(): string | null }[]) => execForm(list.at(-1)?.getArgumentsContent() ?? '');
  const expose = inFinalStage(df.getInstructions()).find((i) => i.getKeyword() === 'EXPOSE')?.getArgumentsContent() ?? '';
  return {
    df,
    env,
    port: Number(expose.split('/')[0]),
    cmd: lastExecForm(inFinalStage(df.getCMDs())),
    entrypoint: lastExecForm(inFinalStage(df.getENTRYPOINTs())),
    healthcheck: execForm((df.getHEALTHCHECKs().at(-1)?.getArgumentsContent() ?? '').replace(/^.*?\bCMD\s+/s, '')),
  };
}

/** The argv of an exec-form (JSON array) instruction; a shell-form one has none (`[]`). */
function execForm(args: string): string[] {
  try {
    const v: unknown = JSON.parse(args);
    return Array.isArray(v) && v.every((s) => typeof s === 'string') ? v : [];
  } catch {
    return [];
  }
}

/** The `name=value` default of an ARG before the first FROM, so `FROM ${NODE_IMAGE}` can be read. */
function resolveImage(df: Dockerfile, image: string): string {
  return image.replace(/\$\{?(\w+)\}?/g, (_m, name: string) => {
    const arg = df.getInitialARGs().find((a) => a.getProperty()?.getName() === name);
    return arg?.getProperty()?.getValue() ?? '';
  });
}

/** The start script's command without the shell's `exec`: what the image must run, minus npm. */
const startArgv = () => pkg.scripts.start!.replace(/^exec\s+/, '').split(/\s+/);

function dockerfileProblems(text: string, dockerignore: string): string[] {
  const problems = lintDockerfile(text).map((d) => `lint: ${d.message}`);
  const image = parseDockerfile(text);
  const { df, env } = image;
  const stages = df.getFROMs();
  if (stages.length < 2) problems.push('not multi-stage');
  if (stages.some((s) => !s.getBuildStage())) problems.push('a stage without a name');
  const runtimeImage = resolveImage(df, stages.at(-1)!.getImage() ?? '');
  if (!/^node:24(\.|-|$)/.test(runtimeImage)) problems.push(`runtime image ${runtimeImage} is not Node 24`);
  const runs = df.getInstructions().filter((i) => i.getKeyword() === 'RUN').map((i) => i.getArgumentsContent() ?? '');
  if (!runs.some((r) => /\bnpm ci\b.*--omit=dev/.test(r))) problems.push('no npm ci --omit=dev');
  const copies = df.getCOPYs().filter((c) => c.getFromFlag());
  if (!copies.some((c) => /node_modules/.test(c.getArgumentsContent() ?? ''))) problems.push('node_modules not copied from a build stage');

  const users = df.getInstructions().filter((i) => i.getKeyword() === 'USER');
  const user = users.at(-1)?.getArgumentsContent()?.split(':')[0];
  if (!user || user === 'root' || user === '0') problems.push(`runs as ${user ?? 'root'}`);

  const hcArgv = image.healthcheck;
  if (df.getHEALTHCHECKs().length !== 1) problems.push('not exactly one HEALTHCHECK');
  else if (hcArgv[0] !== 'node') problems.push('HEALTHCHECK is not an exec-form node command');
  else if (!hcArgv.join(' ').includes('/health/live')) problems.push('HEALTHCHECK does not ask /health/live');

  const argv = [...image.entrypoint, ...image.cmd];
  if (image.cmd.length === 0) problems.push('CMD is not in exec form');
  if (df.getENTRYPOINTs().length > 0 && image.entrypoint.length === 0) problems.push('ENTRYPOINT is not in exec form');
  if (argv.some((a) => /^(npm|sh|bash|\/bin\/sh)$/.test(a))) problems.push('a wrapper stands between the signal and node');
  const nodeAt = argv.indexOf('node');
  if (nodeAt < 0 || (nodeAt > 0 && !/(^|\/)(tini|dumb-init)$/.test(argv[0]!))) problems.push('node is neither PID 1 nor under an init');
  if (image.cmd.join(' ') !== startArgv().join(' ')) problems.push(`CMD differs from the start script (${startArgv().join(' ')})`);

  if (!(image.port > 0) || String(image.port) !== env.PORT) problems.push(`EXPOSE ${image.port} is not PORT (${env.PORT})`);
  if (env.HOST !== '0.0.0.0') problems.push('HOST is not 0.0.0.0: the port would be unreachable from outside the container');
  const volumes = df.getInstructions().filter((i) => i.getKeyword() === 'VOLUME').flatMap((i) => execForm(i.getArgumentsContent() ?? ''));
  if (!env.DATA_DIR || !volumes.includes(env.DATA_DIR)) problems.push('DATA_DIR is not a VOLUME');
  if (!runs.some((r) => new RegExp(`chown\\s+${user}\\b.*\\s${env.DATA_DIR}\\b`).test(r))) problems.push('DATA_DIR is not owned by the user');
  for (const name of unknownNames(Object.keys(env))) problems.push(`ENV ${name} is not read by config.ts`);

  // Everything the stages copy from the context is in it, and nothing secret or local is.
  const sources = df.getCOPYs()
    .filter((c) => !c.getFromFlag())
    .flatMap((c) => c.getArguments().map((a) => a.getValue()).filter((a) => !a.startsWith('--')).slice(0, -1));
  for (const s of sources) if (dockerIgnored(dockerignore, s)) problems.push(`COPY ${s} is excluded by .dockerignore`);
  for (const s of ['.env', 'src/.env', 'node_modules', 'data', '.git', 'test']) {
    if (!dockerIgnored(dockerignore, s)) problems.push(`${s} reaches the build context`);
  }
  return problems;
}

/** Whether .dockerignore leaves `path` out of the build context (last matching pattern wins, `!` re-includes). */
function dockerIgnored(dockerignore: string, path: string): boolean {
  let ignored = false;
  for (const line of dockerignore.split('\n').map((l) => l.trim())) {
    if (!line || line.startsWith('#')) continue;
    const negated = line.startsWith('!');
    if (globRegex(negated ? line.slice(1) : line).test(path)) ignored = !negated;
  }
  return ignored;
}

/** A .dockerignore pattern as a regular expression; one that matches a directory covers everything in it. */
function globRegex(glob: string): RegExp {
  const body = glob.replace(/\/$/, '')
    .replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replace(/\*\*\//g, '\0')
    .replace(/\*/g, '[^/]*')
    .replace(/\?/g, '[^/]')
    .replace(/\0/g, '(?:.*/)?');
  return new RegExp(`^${body}(?:/.*)?$`);
}

test('the Dockerfile: multi-stage, non-root, exec form, HEALTHCHECK on /health/live, one port', () => {
  const text = read('Dockerfile');
  const dockerignore = read('.dockerignore');
  assert.deepEqual(dockerfileProblems(text, dockerignore), []);

  const broken: [from: string, to: string, problem: string][] = [
    ['USER node', 'USER root', 'runs as root'],
    ['ENTRYPOINT ["/usr/bin/tini", "--"]', 'ENTRYPOINT ["npm", "start"]', 'node is neither PID 1 nor under an init'],
    ['EXPOSE 8000', 'EXPOSE 8080', 'EXPOSE 8080 is not PORT'],
    ['/health/live', '/health', 'HEALTHCHECK does not ask /health/live'],
    ['npm ci --omit=dev', 'npm ci', 'no npm ci --omit=dev'],
    ['node:24-trixie-slim', 'node:20-bookworm-slim', 'is not Node 24'],
  ];
  for (const [from, to, problem] of broken) {
    const found = dockerfileProblems(text.replaceAll(from, to), dockerignore);
    assert.ok(found.some((p) => p.includes(problem)), `${from} -> ${to}: expected "${problem}", got ${JSON.stringify(found)}`);
  }
  const shellForm = text.replace(/^CMD \[.*\]$/m, `CMD ${startArgv().join(' ')}`);
  assert.ok(dockerfileProblems(shellForm, dockerignore).includes('CMD is not in exec form'));
  assert.ok(dockerfileProblems(text, `${dockerignore}\n!.env\n`).includes('.env reaches the build context'));
  assert.ok(dockerfileProblems(text, `${dockerignore}\nsrc/\n`).includes('COPY src is excluded by .dockerignore'));
});

/** `nobody`: the image runs as an unprivileged user, and the embedded PostgreSQL refuses root. */
const UNPRIVILEGED = 65534;

test('the image\'s CMD and HEALTHCHECK, run as they are written: embedded PostgreSQL as a non-root user, SIGTERM exits 0', async (t) => {
  const image = parseDockerfile(read('Dockerfile'));
  const { healthcheck } = image;
  const dataDir = mkdtempSync(join(tmpdir(), 'spate-image-'));
  t.after(() => rmSync(dataDir, { recursive: true, force: true }));
  // As root (CI), as the image does: an unprivileged user owning DATA_DIR. Otherwise this user already is one.
  const asRoot = process.getuid?.() === 0;
  if (asRoot) chownSync(dataDir, UNPRIVILEGED, UNPRIVILEGED);
  const port = await freePort();
  const env = {
    PATH: process.env.PATH!,
    ...image.env,
    // Loopback rather than the image's 0.0.0.0: this runs on a shared machine, not in a network namespace.
    HOST: '127.0.0.1',
    PORT: String(port),
    DATA_DIR: dataDir,
    JWT_SECRET: SECRET,
  };
  const user = asRoot ? { uid: UNPRIVILEGED, gid: UNPRIVILEGED } : {};
  // The image builds the start bundle as root before it switches user (its `RUN node scripts/start.mjs --build-only`):
  // so does this, so the unprivileged CMD finds it fresh and writes nothing, as in the image.
  const build = read('Dockerfile').match(/^RUN (node scripts\/start\.mjs --build-only)$/m)?.[1];
  assert.ok(build, 'the Dockerfile builds the start bundle');
  assert.equal(spawnSync('sh', ['-c', build], { cwd: root, env: { PATH: process.env.PATH! }, stdio: 'ignore' }).status, 0);
  // tini is the image's ENTRYPOINT; here node itself gets the signal, as it would as PID 1 or under `docker run --init`.
  const child = spawn(image.cmd[0]!, image.cmd.slice(1), { cwd: root, env, ...user, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const exited = new Promise<number | string>((resolve) => child.once('exit', (code, sig) => resolve(code ?? sig ?? -1)));
  t.after(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 20_000))]);
    child.kill('SIGKILL');
  });
  const probe = () => spawnSync(healthcheck[0]!, healthcheck.slice(1), { env, ...user, timeout: 10_000 }).status;

  const deadline = Date.now() + 120_000;
  for (;;) {
    const ready = await fetch(`http://127.0.0.1:${port}/health/ready`).then((r) => r.status, () => 0);
    if (ready === 200) break;
    assert.equal(child.exitCode, null, `the service exited:\n${out}`);
    assert.ok(Date.now() < deadline, `not ready within 120 s:\n${out}`);
    await new Promise((r) => setTimeout(r, 250));
  }
  assert.equal(probe(), 0, 'HEALTHCHECK passes while the service serves');
  assert.ok(existsSync(join(dataDir, 'pg', 'PG_VERSION')), 'the embedded database lives in DATA_DIR');

  const signalled = performance.now();
  child.kill('SIGTERM');
  assert.equal(await exited, 0, out);
  assert.ok(performance.now() - signalled < Number(image.env.SHUTDOWN_TIMEOUT ?? 30) * 1000);
  assert.match(out, /"msg":"stopped"/);
  assert.equal(probe(), 1, 'HEALTHCHECK fails once the service is gone');
});

test('npm ci --omit=dev is enough: every package the service imports is a production dependency', () => {
  const files = (dir: string): string[] => readdirSync(join(root, dir), { withFileTypes: true })
    .flatMap((e) => (e.isDirectory() ? files(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : []));
  const imported = new Set<string>(['tsx']); // the start command's --import
  for (const file of files('src')) {
    for (const m of read(file).matchAll(/(?:^|\s)(?:import|export)\s[^'"]*?from\s+'([^'.][^']*)'|import\(\s*'([^'.][^']*)'\s*\)/gm)) {
      const spec = (m[1] ?? m[2])!;
      if (isBuiltin(spec)) continue;
      imported.add(spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]!);
    }
  }
  assert.ok(imported.size > 10, 'the import scan finds the service\'s packages');
  assert.deepEqual([...imported].filter((name) => !(name in pkg.dependencies)), []);
});

// ---------------------------------------------------------------------------------------------------------------
// JSON schemas

function schemaValidator(path: string): ValidateFunction {
  const schema = JSON.parse(read(path)) as Record<string, unknown>;
  // Both declare a meta-schema by a URL ajv does not bundle under that spelling; the keywords are draft-07's.
  delete schema.$schema;
  // Kubernetes' own formats (int32, int-or-string, ...) are type-checked by the schema itself; only the shape counts.
  const ajv = new Ajv({ allErrors: true, strict: false, validateFormats: false });
  return ajv.compile(schema);
}
const schemaErrors = (validate: ValidateFunction, doc: Doc, what: string) =>
  validate(doc) ? [] : (validate.errors ?? []).map((e) => `${what}: ${e.instancePath || '/'} ${e.message} ${JSON.stringify(e.params)}`);

/** Compose-style `${NAME}`, `${NAME:-default}`, `${NAME-default}`, `${NAME:?error}` and `$$`, applied to every string. */
function interpolate(node: Doc, vars: Record<string, string>): Doc {
  if (Array.isArray(node)) return node.map((n) => interpolate(n, vars));
  if (node && typeof node === 'object') return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, interpolate(v, vars)]));
  if (typeof node !== 'string') return node;
  return node.replace(/\$\$|\$\{(\w+)(?:(:?)([-?])([^}]*))?\}/g, (_whole, name: string | undefined, colon, op, arg: string) => {
    if (!name) return '$';
    const value = vars[name];
    const missing = value === undefined || (colon === ':' && value === '');
    if (!missing) return value;
    if (op === '?') throw new Error(`compose would stop: ${name}: ${arg}`);
    return op === '-' ? arg : '';
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Compose

type Role = 'all' | 'api' | 'worker';
/**
 * Each profile's Spate services by ROLE, and what else it starts. With an external database the API and the
 * workers are separate services; the embedded database lives in its one container, which therefore does both.
 */
const PROFILES: Record<string, { spate: Record<string, Role>; with: string[] }> = {
  embedded: { spate: { 'spate-embedded': 'all' }, with: [] },
  postgres: { spate: { 'spate-postgres-api': 'api', 'spate-postgres-worker': 'worker' }, with: ['postgres', 'redis'] },
  cassandra: { spate: { 'spate-cassandra-api': 'api', 'spate-cassandra-worker': 'worker' }, with: ['cassandra', 'redis'] },
};

/** Go-style durations as Compose writes them ("40s", "1m30s"), in seconds. */
function seconds(duration: string): number {
  let total = 0;
  for (const m of duration.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)) total += Number(m[1]) * { ms: 0.001, s: 1, m: 60, h: 3600 }[m[2] as 'ms']!;
  return total;
}

function composeProblems(raw: Doc, image: Image): string[] {
  const problems = schemaErrors(composeSchema, raw, 'schema');
  const doc = interpolate(raw, { JWT_SECRET: SECRET });
  const services = doc.services as Record<string, Doc>;
  const active = (profile: string) => Object.keys(services).filter((n) => (services[n].profiles ?? []).includes(profile));
  const unprofiled = Object.keys(services).filter((n) => !services[n].profiles?.length);
  if (unprofiled.length) problems.push(`services in every profile: ${unprofiled.join(', ')}`);
  for (const [profile, want] of Object.entries(PROFILES)) {
    const got = active(profile).sort();
    const expected = [...Object.keys(want.spate), ...want.with].sort();
    if (got.join() !== expected.join()) problems.push(`profile ${profile}: ${got.join(', ')} instead of ${expected.join(', ')}`);
    for (const [name, role] of Object.entries(want.spate)) {
      const spate = services[name];
      if (!spate) continue;
      for (const dep of Object.keys(spate.depends_on ?? {})) {
        if (!got.includes(dep)) problems.push(`${name} depends on ${dep}, which profile ${profile} does not start`);
      }
      problems.push(...spateServiceProblems(name, spate, image, got, role));
    }
  }
  // PostgreSQL's image from 18 on refuses a volume at the old .../data path: its data lives in a versioned directory.
  const pg = services.postgres;
  const major = Number(/^postgres:(\d+)/.exec(pg?.image ?? '')?.[1]);
  const target = major >= 18 ? '/var/lib/postgresql' : '/var/lib/postgresql/data';
  if (!(pg?.volumes ?? []).some((v: string) => v.split(':')[1] === target)) problems.push(`postgres: ${pg?.image} keeps its data in ${target}, not a volume`);
  return problems;
}

/** One Spate service: its environment is one config.ts reads and accepts, pointing at services that exist. */
/**
 * What a Spate service's container sees, given the shell compose runs in: a variable without a value (null) takes
 * the shell's, and is unset when the shell has none.
 */
function containerEnv(service: Doc, image: Image, shell: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = { ...image.env };
  for (const [k, v] of Object.entries(service.environment ?? {})) {
    if (v !== null) env[k] = String(v);
    else if (shell[k] !== undefined) env[k] = shell[k];
    else delete env[k];
  }
  return env;
}

function spateServiceProblems(name: string, service: Doc, image: Image, running: string[], role: Role): string[] {
  const problems: string[] = [];
  for (const n of unknownNames(Object.keys(service.environment ?? {}))) problems.push(`${name}: ${n} is not read by config.ts`);
  let config;
  try {
    config = loadConfig(containerEnv(service, image));
  } catch (err) {
    return [...problems, `${name}: config.ts refuses its environment: ${(err as Error).message}`];
  }
  const host = (url: string | undefined) => (url ? new URL(url).hostname : undefined);
  for (const dependency of [host(config.databaseUrl), host(config.redisUrl), ...(config.cassandra?.hosts ?? [])]) {
    if (dependency && !running.includes(dependency)) problems.push(`${name}: ${dependency} is not a service of its profile`);
  }
  if (!config.databaseUrl && !config.cassandra) {
    const mounts = (service.volumes ?? []).map((v: string | { target: string }) => (typeof v === 'string' ? v.split(':')[1] : v.target));
    if (!mounts.includes(config.dataDir)) problems.push(`${name}: the embedded database's DATA_DIR ${config.dataDir} is not a volume`);
  }
  if (!(seconds(service.stop_grace_period ?? '10s') > config.shutdownTimeoutMs / 1000)) {
    problems.push(`${name}: stop_grace_period is not longer than SHUTDOWN_TIMEOUT`);
  }
  if (config.jobs.role !== role) problems.push(`${name}: runs ROLE=${config.jobs.role}, not ${role}`);
  // Tracing: off unless the shell sets it, and then on with what it set (config.ts accepting it).
  if (config.tracing.enabled) problems.push(`${name}: traces without the shell asking`);
  const passed = Object.keys(SHELL_TRACING).filter((k) => service.environment?.[k] !== null);
  if (passed.length) problems.push(`${name}: does not take ${passed.join(', ')} from the shell`);
  try {
    if (!loadConfig(containerEnv(service, image, SHELL_TRACING)).tracing.enabled) problems.push(`${name}: the shell's OTEL_* do not turn tracing on`);
  } catch (err) {
    problems.push(`${name}: config.ts refuses the shell's OTEL_*: ${(err as Error).message}`);
  }
  // The API is published on the service's port; a worker answers health and metrics on the compose network only.
  const containerPorts = (service.ports ?? []).map((p: string) => Number(String(p).split(':').at(-1)));
  const published = role === 'worker' ? '' : String(config.port);
  if (containerPorts.join() !== published || config.port !== image.port) {
    problems.push(`${name}: publishes ${containerPorts.join() || 'nothing'}, the service listens on ${config.port}, the image exposes ${image.port}`);
  }
  if (service.read_only && !(service.tmpfs ?? []).includes('/tmp')) problems.push(`${name}: read-only without a writable /tmp`);
  if (service.build?.dockerfile !== 'Dockerfile') problems.push(`${name}: not built from the Dockerfile`);
  return problems;
}

const composeSchema = schemaValidator('test/fixtures/compose-spec/compose-spec.json');
const readCompose = (): Doc => parseYaml(read('deploy/compose.yaml'), { merge: true });

test('deploy/compose.yaml: valid Compose, one profile per deployment, each Spate service configured as config.ts reads it', () => {
  const image = parseDockerfile(read('Dockerfile'));
  const compose = readCompose();
  assert.deepEqual(composeProblems(compose, image), []);

  const broken: [(doc: Doc) => void, string][] = [
    [(d) => { d.services['spate-postgres-api'].environment.DATABSE_URL = 'x'; }, 'DATABSE_URL is not read by config.ts'],
    [(d) => { d.services['spate-embedded'].environment.ADMIN_EMAIL = ''; }, 'config.ts refuses its environment: Invalid configuration: ADMIN_EMAIL'],
    [(d) => { d.services['spate-cassandra-worker'].environment.CASSANDRA_HOSTS = 'cassandra-1'; }, 'cassandra-1 is not a service of its profile'],
    [(d) => { d.services.redis.profiles = ['postgres']; }, 'profile cassandra: cassandra, spate-cassandra-api, spate-cassandra-worker instead of'],
    [(d) => { d.services['spate-postgres-worker'].environment.ROLE = 'all'; }, 'spate-postgres-worker: runs ROLE=all, not worker'],
    [(d) => { delete d.services['spate-cassandra-api'].environment.ROLE; }, 'spate-cassandra-api: runs ROLE=all, not api'],
    [(d) => { d.services['spate-postgres-worker'].ports = ['8001:8000']; }, 'spate-postgres-worker: publishes 8000'],
    [(d) => { delete d.services['spate-cassandra-worker']; }, 'profile cassandra: cassandra, redis, spate-cassandra-api instead of'],
    [(d) => { d.services['spate-embedded'].volumes = []; }, 'DATA_DIR /data is not a volume'],
    [(d) => { d.services['spate-postgres-worker'].stop_grace_period = '30s'; }, 'stop_grace_period is not longer than SHUTDOWN_TIMEOUT'],
    [(d) => { d.services['spate-postgres-api'].ports = ['8000:8080']; }, 'publishes 8080'],
    [(d) => { d.services['spate-embedded'].tmpfs = []; }, 'read-only without a writable /tmp'],
    [(d) => { d.services.postgres.volumes = ['postgres-data:/var/lib/postgresql/data']; }, 'postgres: postgres:18 keeps its data in /var/lib/postgresql, not a volume'],
    [(d) => { d.services.postgres.healthcheck.intervall = '5s'; }, 'schema: /services/postgres/healthcheck must NOT have additional properties'],
    [(d) => { d.services['spate-postgres-worker'].environment.OTEL_EXPORTER_OTLP_ENDPOINT = 'http://otel-collector:4318'; }, 'spate-postgres-worker: traces without the shell asking'],
    [(d) => { delete d.services['spate-cassandra-worker'].environment.OTEL_SERVICE_NAME; }, 'spate-cassandra-worker: does not take OTEL_SERVICE_NAME from the shell'],
    [(d) => { d.services['spate-embedded'].environment.OTEL_EXPORTER_OTLP_ENDPIONT = null; }, 'spate-embedded: OTEL_EXPORTER_OTLP_ENDPIONT is not read by config.ts'],
    [(d) => { d.services['spate-postgres-api'].environment.OTEL_TRACES_EXPORTER = 'zipkin'; }, 'spate-postgres-api: config.ts refuses its environment: Invalid configuration: OTEL_TRACES_EXPORTER'],
  ];
  for (const [breakIt, problem] of broken) {
    const copy = clone(compose);
    breakIt(copy);
    const found = composeProblems(copy, image);
    assert.ok(found.some((p) => p.includes(problem)), `expected "${problem}", got ${JSON.stringify(found)}`);
  }
  assert.throws(() => interpolate(compose, {}), /JWT_SECRET/, 'a missing JWT_SECRET stops compose before anything starts');
});

// ---------------------------------------------------------------------------------------------------------------
// Kubernetes

const K8S = 'deploy/k8s';
/** Tracing's ConfigMap: not applied by the kustomization; its presence turns tracing on. */
const TRACING_FILE = 'tracing.example.yaml';
const k8sSchemas: Record<string, ValidateFunction> = {
  Deployment: schemaValidator('test/fixtures/kubernetes/deployment-apps-v1.json'),
  Service: schemaValidator('test/fixtures/kubernetes/service-v1.json'),
  PodDisruptionBudget: schemaValidator('test/fixtures/kubernetes/poddisruptionbudget-policy-v1.json'),
  ConfigMap: schemaValidator('test/fixtures/kubernetes/configmap-v1.json'),
  Secret: schemaValidator('test/fixtures/kubernetes/secret-v1.json'),
};

interface Manifests {
  files: Record<string, Doc>;
  kustomization: Doc;
}

function readManifests(): Manifests {
  const files: Record<string, Doc> = {};
  for (const name of readdirSync(join(root, K8S)).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml')) {
    files[name] = parseYaml(read(join(K8S, name)));
  }
  return { files, kustomization: parseYaml(read(join(K8S, 'kustomization.yaml'))) };
}

const selects = (selector: Record<string, string> | undefined, labels: Record<string, string> | undefined) =>
  !!selector && Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels?.[k] === v);

function k8sProblems({ files, kustomization }: Manifests, image: Image): string[] {
  const problems: string[] = [];
  for (const [file, doc] of Object.entries(files)) {
    const validate = k8sSchemas[doc?.kind];
    if (!validate) problems.push(`${file}: no schema for kind ${doc?.kind}`);
    else problems.push(...schemaErrors(validate, doc, file));
  }
  const applied = (kustomization.resources ?? []) as string[];
  // The examples are the operator's to fill in and apply once: a re-apply must not overwrite them.
  const expected = Object.keys(files).filter((f) => !f.endsWith('.example.yaml')).sort();
  if ([...applied].sort().join() !== expected.join()) problems.push(`kustomization applies ${applied.join(', ')}, not ${expected.join(', ')}`);
  if (applied.includes('secret.example.yaml')) problems.push('kustomization applies the example Secret');
  if (applied.includes(TRACING_FILE)) problems.push('kustomization applies the tracing ConfigMap: tracing would be on for everyone');

  const all = Object.values(files);
  const kind = (k: string) => all.filter((d) => d?.kind === k);
  const tracing = files[TRACING_FILE];
  const configMap = kind('ConfigMap').find((d) => d !== tracing);
  const [secret] = kind('Secret');
  const deployments = kind('Deployment');
  const byComponent = (c: string) => deployments.find((d) => d.metadata?.labels?.['app.kubernetes.io/component'] === c);
  const api = byComponent('api');
  const worker = byComponent('worker');
  if (!api || !worker) return [...problems, 'no api and worker Deployments'];

  const settings = { ...image.env, ...configMap?.data, ...secret?.stringData } as Record<string, string>;
  const shutdownS = Number(settings.SHUTDOWN_TIMEOUT ?? 30);
  for (const n of unknownNames([...Object.keys(configMap?.data ?? {}), ...Object.keys(secret?.stringData ?? {}), ...Object.keys(tracing?.data ?? {})])) {
    problems.push(`${n} is not read by config.ts`);
  }
  // Deleting the tracing ConfigMap turns tracing off and changes nothing else.
  for (const n of Object.keys(tracing?.data ?? {}).filter((k) => !TRACING_NAMES.has(k))) problems.push(`${TRACING_FILE}: ${n} is not a tracing variable`);
  for (const d of deployments) problems.push(...deploymentProblems(d, { configMap, secret, tracing, image, kustomization, shutdownS }));
  // Each Deployment runs its role (config.ts `ROLE`): the API serves, the worker runs the jobs.
  const roleOf = (d: Doc) => ((d.spec?.template?.spec?.containers?.[0]?.env ?? []) as Doc[]).find((e) => e.name === 'ROLE')?.value;
  if (roleOf(api) !== 'api') problems.push('the API Deployment does not set ROLE=api');
  if (roleOf(worker) !== 'worker') problems.push('the worker Deployment does not set ROLE=worker');
  if (!((worker.spec?.replicas ?? 1) >= 1)) problems.push('no worker runs the jobs');

  for (const service of kind('Service')) {
    const selector = service.spec?.selector;
    if (!selects(selector, api.spec?.template?.metadata?.labels)) problems.push(`Service ${service.metadata?.name} does not select the API pods`);
    if (selects(selector, worker.spec?.template?.metadata?.labels)) problems.push(`Service ${service.metadata?.name} selects the worker pods`);
    const named = api.spec.template.spec.containers.flatMap((c: Doc) => c.ports ?? []);
    for (const p of service.spec?.ports ?? []) {
      const target = named.find((n: Doc) => n.name === p.targetPort || n.containerPort === p.targetPort);
      if (!target) problems.push(`Service port ${p.port} targets ${p.targetPort}, which no API container port is`);
    }
  }
  const pdbs = kind('PodDisruptionBudget');
  if (!pdbs.some((p) => selects(p.spec?.selector?.matchLabels, api.spec?.template?.metadata?.labels))) {
    problems.push('no PodDisruptionBudget selects the API pods');
  }
  for (const p of pdbs) {
    if (typeof p.spec?.minAvailable === 'number' && !(p.spec.minAvailable < (api.spec?.replicas ?? 1))) {
      problems.push(`PodDisruptionBudget ${p.metadata?.name} allows no disruption at all (minAvailable >= replicas): drains would hang`);
    }
  }
  return problems;
}

interface DeploymentContext {
  configMap: Doc;
  secret: Doc;
  tracing: Doc;
  image: Image;
  kustomization: Doc;
  shutdownS: number;
}

function deploymentProblems(d: Doc, ctx: DeploymentContext): string[] {
  const name = d.metadata?.name;
  const problems: string[] = [];
  const pod = d.spec?.template?.spec ?? {};
  if (!selects(d.spec?.selector?.matchLabels, d.spec?.template?.metadata?.labels)) problems.push(`${name}: selector does not match its pods`);
  const podSecurity = pod.securityContext ?? {};
  if (podSecurity.runAsNonRoot !== true) problems.push(`${name}: runAsNonRoot is not set`);
  if (podSecurity.runAsUser === 0) problems.push(`${name}: runs as root`);
  const emptyDirs = new Set((pod.volumes ?? []).filter((v: Doc) => v.emptyDir).map((v: Doc) => v.name));
  const images = new Set((ctx.kustomization.images ?? []).map((i: Doc) => i.name));
  for (const c of pod.containers ?? []) {
    const where = `${name}/${c.name}`;
    if (!images.has(c.image)) problems.push(`${where}: image ${c.image} is not the kustomization's`);
    const probe = (p: Doc) => p?.httpGet;
    if (probe(c.readinessProbe)?.path !== '/health/ready') problems.push(`${where}: readiness probe is not /health/ready`);
    if (probe(c.livenessProbe)?.path !== '/health/live') problems.push(`${where}: liveness probe is not /health/live`);
    const ports = (c.ports ?? []) as Doc[];
    for (const p of [c.readinessProbe, c.livenessProbe, c.startupProbe].map(probe).filter(Boolean)) {
      const port = ports.find((cp) => cp.name === p.port || cp.containerPort === p.port);
      if (!port) problems.push(`${where}: probe port ${p.port} is no container port`);
    }
    const listens = Number(ctx.configMap?.data?.PORT ?? ctx.image.env.PORT);
    if (!ports.some((cp) => cp.containerPort === listens) || listens !== ctx.image.port) {
      problems.push(`${where}: container ports ${ports.map((p) => p.containerPort).join()} are not PORT ${listens} (EXPOSE ${ctx.image.port})`);
    }
    const from = (c.envFrom ?? []) as Doc[];
    if (!from.some((e) => e.configMapRef?.name === ctx.configMap?.metadata?.name)) problems.push(`${where}: does not read the ConfigMap`);
    if (!from.some((e) => e.secretRef?.name === ctx.secret?.metadata?.name)) problems.push(`${where}: does not read the Secret`);
    const tracing = from.find((e) => e.configMapRef?.name === ctx.tracing?.metadata?.name);
    if (!tracing) problems.push(`${where}: does not read the tracing ConfigMap`);
    else if (tracing.configMapRef.optional !== true) problems.push(`${where}: the tracing ConfigMap is not optional: pods would not start without it`);
    for (const e of (c.env ?? []) as Doc[]) {
      if (CONFIG_NAMES.has(e.name)) continue;
      problems.push(`${where}: ${e.name} is not read by config.ts`);
    }
    for (const kind of ['requests', 'limits']) {
      for (const r of ['cpu', 'memory']) if (!c.resources?.[kind]?.[r]) problems.push(`${where}: no ${r} ${kind}`);
    }
    const sc = c.securityContext ?? {};
    if (sc.readOnlyRootFilesystem !== true) problems.push(`${where}: root filesystem is writable`);
    if (sc.allowPrivilegeEscalation !== false) problems.push(`${where}: privilege escalation allowed`);
    if (!(sc.capabilities?.drop ?? []).includes('ALL')) problems.push(`${where}: capabilities not dropped`);
    const tmp = (c.volumeMounts ?? []).find((m: Doc) => m.mountPath === '/tmp');
    if (!tmp || !emptyDirs.has(tmp.name)) problems.push(`${where}: no writable emptyDir at /tmp (tsx's cache)`);
    const preStop = Number(c.lifecycle?.preStop?.sleep?.seconds ?? 0);
    if (!((pod.terminationGracePeriodSeconds ?? 30) > ctx.shutdownS + preStop)) {
      problems.push(`${where}: terminationGracePeriodSeconds is not longer than SHUTDOWN_TIMEOUT (${ctx.shutdownS}) + preStop (${preStop})`);
    }
  }
  return problems;
}

test('deploy/k8s: valid against the Kubernetes schemas, probes, selectors, grace, security and config as config.ts reads it', () => {
  const image = parseDockerfile(read('Dockerfile'));
  const manifests = readManifests();
  assert.deepEqual(k8sProblems(manifests, image), []);

  const api = 'api-deployment.yaml';
  const container = (m: Manifests) => m.files[api].spec.template.spec.containers[0];
  const broken: [(m: Manifests) => void, string][] = [
    [(m) => { container(m).readinessProbes = container(m).readinessProbe; }, `${api}: /spec/template/spec/containers/0 must NOT have additional properties`],
    [(m) => { container(m).resources.limits.memory = { value: '512Mi' }; }, `${api}: /spec/template/spec/containers/0/resources/limits/memory must be`],
    [(m) => { container(m).readinessProbe.httpGet.path = '/health'; }, 'readiness probe is not /health/ready'],
    [(m) => { container(m).livenessProbe.httpGet.path = '/health/ready'; }, 'liveness probe is not /health/live'],
    [(m) => { container(m).livenessProbe.httpGet.port = 'web'; }, 'probe port web is no container port'],
    [(m) => { m.files['pdb.yaml'].spec.selector.matchLabels['app.kubernetes.io/component'] = 'web'; }, 'no PodDisruptionBudget selects the API pods'],
    [(m) => { m.files['pdb.yaml'].spec.minAvailable = 2; }, 'allows no disruption at all'],
    [(m) => { m.files['service.yaml'].spec.selector = { 'app.kubernetes.io/name': 'spate' }; }, 'selects the worker pods'],
    [(m) => { m.files[api].spec.template.spec.terminationGracePeriodSeconds = 30; }, 'terminationGracePeriodSeconds is not longer than SHUTDOWN_TIMEOUT (30) + preStop (5)'],
    [(m) => { m.files['configmap.yaml'].data.SHUTDOWN_TIMEOUT = '60'; }, 'terminationGracePeriodSeconds is not longer than SHUTDOWN_TIMEOUT (60)'],
    [(m) => { m.files['configmap.yaml'].data.LOGLEVEL = 'info'; }, 'LOGLEVEL is not read by config.ts'],
    [(m) => { m.files['worker-deployment.yaml'].spec.replicas = 0; }, 'no worker runs the jobs'],
    [(m) => { container(m).env = [{ name: 'ROLE', value: 'all' }]; }, 'the API Deployment does not set ROLE=api'],
    [(m) => { container(m).env = [{ name: 'ROLES', value: 'api' }]; }, 'spate-api/spate: ROLES is not read by config.ts'],
    [(m) => { delete container(m).securityContext.readOnlyRootFilesystem; }, 'root filesystem is writable'],
    [(m) => { m.files[api].spec.template.spec.securityContext.runAsNonRoot = false; }, 'runAsNonRoot is not set'],
    [(m) => { container(m).volumeMounts = []; }, 'no writable emptyDir at /tmp'],
    [(m) => { delete container(m).resources.limits; }, 'no cpu limits'],
    [(m) => { container(m).envFrom.splice(1, 1); }, 'does not read the Secret'],
    [(m) => { m.kustomization.resources.push('secret.example.yaml'); }, 'kustomization applies the example Secret'],
    [(m) => { m.kustomization.resources.push(TRACING_FILE); }, 'kustomization applies the tracing ConfigMap'],
    [(m) => { delete container(m).envFrom[2].configMapRef.optional; }, 'spate-api/spate: the tracing ConfigMap is not optional'],
    [(m) => { m.files['worker-deployment.yaml'].spec.template.spec.containers[0].envFrom.pop(); }, 'spate-worker/spate: does not read the tracing ConfigMap'],
    [(m) => { m.files[TRACING_FILE].data.OTEL_EXPORTER_OTLP_ENDPIONT = 'http://x:4318'; }, 'OTEL_EXPORTER_OTLP_ENDPIONT is not read by config.ts'],
    [(m) => { m.files[TRACING_FILE].data.LOG_LEVEL = 'debug'; }, `${TRACING_FILE}: LOG_LEVEL is not a tracing variable`],
    [(m) => { m.files[TRACING_FILE].apiVersion = 'v2'; }, `${TRACING_FILE}: /apiVersion`],
  ];
  for (const [breakIt, problem] of broken) {
    const copy = clone(manifests);
    breakIt(copy);
    const found = k8sProblems(copy, image);
    assert.ok(found.some((p) => p.includes(problem)), `expected "${problem}", got ${JSON.stringify(found)}`);
  }
});

test('deploy/k8s: config.ts accepts the ConfigMap with real secrets, and refuses the example Secret\'s placeholders', () => {
  const image = parseDockerfile(read('Dockerfile'));
  const { files } = readManifests();
  const data = { ...image.env, ...files['configmap.yaml'].data } as Record<string, string>;
  const example = files['secret.example.yaml'].stringData as Record<string, string>;
  assert.throws(() => loadConfig({ ...data, ...example }), (err) => err instanceof ConfigError && /JWT_SECRET/.test(err.message));

  const real = Object.fromEntries(Object.entries(example).map(([k, v]) => [k, v.replace(/change-me[\w-]*/, SECRET)]));
  const config = loadConfig({ ...data, ...real });
  assert.equal(config.env, 'production');
  assert.equal(config.host, '0.0.0.0');
  assert.equal(config.port, image.port);
  assert.equal(config.auth.jwtSecret, SECRET);
  assert.equal(config.metricsToken, SECRET);
  assert.ok(config.databaseUrl && config.redisUrl, 'an external database and Redis: the pods\' root filesystem is read-only');
  assert.equal(config.tracing.enabled, false, 'tracing off without the tracing ConfigMap');

  const tracing = files[TRACING_FILE].data as Record<string, string>;
  assert.equal(loadConfig({ ...data, ...real, ...tracing }).tracing.enabled, true, 'the tracing ConfigMap turns it on');
  assert.throws(() => loadConfig({ ...data, ...real, ...tracing, OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' }), /OTEL_EXPORTER_OTLP_PROTOCOL/,
    'a protocol that is not shipped is refused at start, not silently sent as JSON');
});
