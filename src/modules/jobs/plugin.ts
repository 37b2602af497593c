/**
 * The jobs plugin: the job queue's place in the app (docs/jobs.md). Modules define job kinds and cron schedules
 * while the app is assembled (`app.jobs.define`, `app.jobs.schedule`); once the app is ready, a process whose
 * ROLE runs workers (`all`, `worker`) starts the runner and the cron scheduler. The database may be away at that
 * moment: they then start when it returns, as the rest of the service recovers by itself.
 *
 * The process's graceful shutdown calls `stopWorkers` beside the HTTP drain, so running jobs get the shutdown's
 * time to finish and the rest go back to the queue; closing the app stops whatever is still running.
 */
import fp from 'fastify-plugin';
import type { JobsConfig } from '../../platform/config.ts';
import { errors } from '../../platform/errors.ts';
import { startScheduler, type Schedule, type Scheduler } from '../../platform/jobs/cron.ts';
import { createRunner, type JobDefinition, type Runner, type RunnerObserver } from '../../platform/jobs/runner.ts';
import { RETENTION_SCHEDULE, retentionJob } from '../../platform/jobs/retention.ts';
import type { JobsStore } from '../../platform/jobs/store.ts';

declare module 'fastify' {
  interface FastifyInstance {
    jobs: JobsRuntime;
  }
}

export interface JobsRuntime {
  /** The queue, or `unavailable` when the backend has none. */
  store(): JobsStore;
  /** Adds a job kind this process can run; before the app is ready. */
  define(def: JobDefinition): void;
  /** Adds a recurring job; before the app is ready. */
  schedule(s: Schedule): void;
  /** Stops taking jobs; running ones get `timeoutMs` to finish, the rest go back to the queue. */
  stopWorkers(timeoutMs: number): Promise<{ finished: number; returned: number }>;
}

export interface JobsPluginOptions {
  jobs: JobsConfig;
  /** Told about every job started and ended (the metrics hook). */
  observer?: RunnerObserver;
}

const START_RETRY_MS = 1000;

export default fp<JobsPluginOptions>(
  async (app, { jobs: config, observer }) => {
    const definitions: JobDefinition[] = [];
    const schedules: Schedule[] = [];
    let runner: Runner | undefined;
    let scheduler: Scheduler | undefined;
    let stopped: Promise<{ finished: number; returned: number }> | undefined;
    let retry: NodeJS.Timeout | undefined;
    let ready = false;

    const before = (what: string) => {
      if (ready) throw new Error(`${what} after the app is ready`);
    };

    async function start(store: JobsStore): Promise<void> {
      if (stopped) return;
      try {
        scheduler ??= schedules.length ? await startScheduler({ store, schedules, tickMs: 1000, log: app.log }) : undefined;
        runner ??= createRunner({
          store, definitions, concurrency: config.concurrency, leaseMs: config.visibilityTimeoutMs,
          pollMs: config.pollMs, log: app.log, observer,
        });
        await runner.start();
        // A shutdown that came while this start was under way.
        if (stopped) await runner.stop(0);
      } catch (err) {
        runner = undefined;
        app.log.warn({ reason: (err as Error).message }, 'job workers could not start yet; retrying');
        retry = setTimeout(() => void start(store), START_RETRY_MS);
      }
    }

    const stopWorkers = (timeoutMs: number) => {
      stopped ??= (async () => {
        clearTimeout(retry);
        scheduler?.stop();
        return runner ? runner.stop(timeoutMs) : { finished: 0, returned: 0 };
      })();
      return stopped;
    };

    app.decorate('jobs', {
      store: () => app.backend.jobs ?? (() => { throw errors.unavailable('no job queue on this backend'); })(),
      define(def) { before('define'); definitions.push(def); },
      schedule(s) { before('schedule'); schedules.push(s); },
      stopWorkers,
    } satisfies JobsRuntime);

    const runtime = app.jobs;
    runtime.define(retentionJob(() => runtime.store(), config.retentionMs));
    runtime.schedule(RETENTION_SCHEDULE);

    app.addHook('onReady', async () => {
      ready = true;
      const store = app.backend.jobs;
      if (!store && config.role === 'worker') app.log.warn('ROLE=worker, but this backend has no job queue (docs/jobs.md): nothing to run');
      // Not awaited: with the database away the app still starts (not ready), and the workers follow it back.
      if (store && config.role !== 'api') void start(store);
    });
    app.addHook('onClose', async () => { await stopWorkers(0); });
  },
  { name: 'jobs', dependencies: ['backend'] },
);
