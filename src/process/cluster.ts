/**
 * The primary process of WORKERS=N (N > 1): N worker processes share the port (node:cluster), each with its own
 * app and its own database pool, so the service uses every core.
 *
 * The primary serves nothing itself. It starts the embedded PostgreSQL once (when no database is configured) and
 * hands its URL to every worker; it restarts a worker that dies unexpectedly, after a backoff; and it owns
 * shutdown: SIGTERM, SIGINT, or `POST /shutdown` in any worker (which asks the primary by message) sends every
 * worker SIGTERM, so each runs its normal drain (src/process/server.ts), and once all have exited it stops the embedded
 * database and exits 0 (1 if a worker failed to drain or had to be killed).
 *
 * Metrics describe the whole group: a worker asked for `/metrics` (or the dashboard) asks the primary, which asks
 * every live worker for its figures over IPC and hands the answers back (`joinMetricsGroup`); the worker merges
 * them (src/platform/metrics-group.ts). Other per-process state stays per worker: without REDIS_URL the
 * rate-limit counters and the auth caches are per worker (docs/security.md: each worker is an instance).
 */
import cluster, { type Worker } from 'node:cluster';
import { randomBytes } from 'node:crypto';
import type pino from 'pino';
import type { Config } from '../platform/config.ts';
import type { EmbeddedPostgres } from '../db/embedded-postgres.ts';
import type { GroupView, Metrics, MetricsPart } from '../platform/metrics.ts';

/** The message a worker sends to ask for a shutdown of the whole service (`POST /shutdown`). */
export const SHUTDOWN_MESSAGE = 'spate:shutdown';

/** Worker -> primary: the group's figures, please. Primary -> worker: here they are (`GroupView`). */
const GROUP_ASK = 'spate:metrics:group-ask';
const GROUP_ANSWER = 'spate:metrics:group-answer';
/** Primary -> every worker: your figures, please. Worker -> primary: here they are (`MetricsPart`). */
const PART_ASK = 'spate:metrics:part-ask';
const PART_ANSWER = 'spate:metrics:part-answer';
/** How long the primary waits for the workers' parts; a worker that has not answered by then is left out. */
const PART_TIMEOUT_MS = 1000;
/** How long a worker waits for the primary's answer before showing its own figures alone. */
const GROUP_TIMEOUT_MS = 2500;

/**
 * A metrics message to a process that has just gone is dropped (the timeouts cover its answer); without a callback
 * a closed channel is an 'error' event, which would take the process down.
 */
const ignoreClosed = () => {};

interface GroupMessage {
  type?: unknown;
  id?: number;
  part?: MetricsPart;
  view?: GroupView;
}

/** First restart delay after a crash; it doubles with each crash in a row of the same worker slot. */
const RESTART_BASE_MS = 100;
const RESTART_MAX_MS = 10_000;
/** A worker that lived this long before dying starts its slot's backoff over. */
const STABLE_AFTER_MS = 10_000;
/** How long past SHUTDOWN_TIMEOUT (which each worker enforces on itself) the primary waits before killing one. */
const KILL_GRACE_MS = 2000;

export type StartDatabase = (config: Config, log: pino.Logger) =>
  Promise<{ config: Config; embedded: EmbeddedPostgres | undefined }>;

/** One of the N places a worker runs in; a restarted worker takes the slot of the one that died. */
interface Slot {
  id: number;
  worker: Worker | undefined;
  startedAt: number;
  /** Consecutive crashes, for the backoff. */
  crashes: number;
  restart: NodeJS.Timeout | undefined;
}

export async function runPrimary(initial: Config, log: pino.Logger, startDatabase: StartDatabase): Promise<void> {
  const count = initial.workers;
  const slots: Slot[] = Array.from({ length: count }, (_, i) => ({
    id: i + 1, worker: undefined, startedAt: 0, crashes: 0, restart: undefined,
  }));
  let stopping: Promise<void> | undefined;
  let failed = false;
  /** Until every worker has listened once, a worker that dies means the service cannot start: give up. */
  let serving = false;
  let listening = 0;

  const live = () => slots.flatMap((s) => (s.worker && !s.worker.isDead() ? [s.worker] : []));

  // Metrics of the group: one collection per worker's ask, each worker's answer matched by id and slot.
  let collections = 0;
  const collecting = new Map<number, (slot: number, part: MetricsPart) => void>();
  function collectGroup(): Promise<GroupView> {
    const id = ++collections;
    const asked = slots.filter((s) => s.worker?.isConnected());
    const parts: MetricsPart[] = [];
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        collecting.delete(id);
        resolve({ parts: parts.sort((a, b) => a.worker! - b.worker!), expected: count });
      };
      const timer = setTimeout(done, PART_TIMEOUT_MS);
      collecting.set(id, (slot, part) => {
        parts.push({ ...part, worker: slot });
        if (parts.length === asked.length) done();
      });
      for (const s of asked) s.worker!.send({ type: PART_ASK, id }, undefined, ignoreClosed);
      if (asked.length === 0) done();
    });
  }

  const stop = (reason: string): Promise<void> => {
    stopping ??= (async () => {
      log.info({ reason, timeoutMs: initial.shutdownTimeoutMs, workers: live().length }, 'shutting down');
      // If the embedded database is still starting, wait for it, so it is stopped below.
      const embedded = (await database.catch(() => undefined))?.embedded;
      for (const slot of slots) clearTimeout(slot.restart);
      const workers = live();
      const exited = Promise.all(workers.map((w) => new Promise((resolve) => {
        if (w.isDead()) resolve(undefined);
        else w.once('exit', resolve);
      })));
      const force = setTimeout(() => {
        failed = true;
        log.error('workers did not stop within SHUTDOWN_TIMEOUT; killing them');
        for (const w of live()) w.process.kill('SIGKILL');
      }, initial.shutdownTimeoutMs + KILL_GRACE_MS);
      // SIGTERM rather than a message: the worker runs exactly the drain a single process runs on SIGTERM.
      for (const w of workers) w.process.kill('SIGTERM');
      await exited;
      clearTimeout(force);
      try {
        await embedded?.stop();
      } catch (err) {
        failed = true;
        log.error({ err }, 'embedded PostgreSQL did not stop cleanly');
      }
      log.info({ exitCode: failed ? 1 : 0 }, 'stopped');
      process.exit(failed ? 1 : 0);
    })();
    return stopping;
  };

  function fork(slot: Slot, env: Record<string, string>): void {
    slot.restart = undefined;
    const worker = cluster.fork(env);
    slot.worker = worker;
    slot.startedAt = Date.now();
    let listened = false;
    worker.once('listening', () => {
      listened = true;
      log.info({ worker: slot.id, workerPid: worker.process.pid }, 'worker listening');
      if (!serving && ++listening === count) {
        serving = true;
        log.info({ workers: count }, 'all workers listening');
      }
    });
    worker.on('message', (msg: (GroupMessage & { reason?: unknown }) | null) => {
      if (msg?.type === SHUTDOWN_MESSAGE) void stop(typeof msg.reason === 'string' ? msg.reason : 'worker request');
      else if (msg?.type === PART_ANSWER && msg.part) collecting.get(msg.id!)?.(slot.id, msg.part);
      else if (msg?.type === GROUP_ASK) {
        void collectGroup().then((view) => {
          if (worker.isConnected()) worker.send({ type: GROUP_ANSWER, id: msg.id, view }, undefined, ignoreClosed);
        });
      }
    });
    worker.once('exit', (code, signal) => {
      const info = { worker: slot.id, workerPid: worker.process.pid, code, signal };
      if (slot.worker === worker) slot.worker = undefined;
      if (stopping) {
        // A worker still loading its modules has no handler yet, and our SIGTERM ends it: nothing was in flight.
        if (code !== 0 && !(signal === 'SIGTERM' && !listened)) failed = true;
        log[code === 0 ? 'info' : 'warn'](info, 'worker stopped');
        return;
      }
      if (!serving && !listened) {
        failed = true;
        log.error(info, 'worker exited before it could serve; stopping');
        void stop('worker failed to start');
        return;
      }
      if (Date.now() - slot.startedAt >= STABLE_AFTER_MS) slot.crashes = 0;
      const delay = Math.min(RESTART_BASE_MS * 2 ** slot.crashes, RESTART_MAX_MS);
      slot.crashes += 1;
      log.error({ ...info, restartInMs: delay }, 'worker exited unexpectedly; restarting it');
      slot.restart = setTimeout(() => fork(slot, env), delay);
    });
    log.info({ worker: slot.id, workerPid: worker.process.pid }, 'worker started');
  }

  process.once('SIGTERM', () => void stop('SIGTERM'));
  process.once('SIGINT', () => void stop('SIGINT'));

  const database = startDatabase(initial, log);
  const started = await database;
  if (stopping) return;
  // Workers read their configuration from the environment like any process; only what is made here is added.
  const env: Record<string, string> = started.embedded ? { DATABASE_URL: started.config.databaseUrl! } : {};
  if (initial.auth.jwtSecret === undefined) {
    // Each worker would otherwise make up its own, and a token issued by one would fail on the others.
    env.JWT_SECRET = randomBytes(48).toString('base64url');
    log.warn('JWT_SECRET is unset: using a random secret shared by the workers of this run only (tokens end with '
      + 'it and are not accepted by other instances); set JWT_SECRET to keep them');
  }
  log.info({ workers: count }, 'starting workers');
  for (const slot of slots) fork(slot, env);
}

/**
 * In a worker: answers the primary's requests for this worker's figures, and makes `app.metrics` read the whole
 * group through the primary. If the primary does not answer in time, the worker's own figures are shown alone
 * (`expected` still says how many workers there are).
 */
export function joinMetricsGroup(metrics: Metrics, workers: number): void {
  let asks = 0;
  const waiting = new Map<number, (view: GroupView) => void>();
  process.on('message', (msg: GroupMessage | null) => {
    if (msg?.type === PART_ASK) {
      void metrics.part().then((part) => {
        if (process.connected) process.send!({ type: PART_ANSWER, id: msg.id, part }, undefined, {}, ignoreClosed);
      });
    } else if (msg?.type === GROUP_ANSWER && msg.view) {
      waiting.get(msg.id!)?.(msg.view);
    }
  });
  metrics.joinGroup(() => new Promise<GroupView>((resolve) => {
    const id = ++asks;
    const alone = setTimeout(() => {
      waiting.delete(id);
      void metrics.part().then((part) => resolve({ parts: [part], expected: workers }));
    }, GROUP_TIMEOUT_MS);
    waiting.set(id, (view) => {
      clearTimeout(alone);
      waiting.delete(id);
      resolve(view);
    });
    if (process.connected) process.send!({ type: GROUP_ASK, id }, undefined, {}, ignoreClosed);
  }));
}
