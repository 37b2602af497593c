/**
 * Bulk import and export (docs/bulk.md): the job kinds and the cleanup schedule in every process that runs jobs,
 * and the routes where the API is served (not ROLE=worker).
 */
import type { FastifyPluginAsync } from 'fastify';
import type { Config } from '../../platform/config.ts';
import { uploadsDir } from '../uploads/files.ts';
import { CLEANUP_SCHEDULE, cleanupJob } from './cleanup.ts';
import { exportJob } from './export-job.ts';
import { importJob } from './import-job.ts';
import bulkRoutes from './routes.ts';
import { createSigner } from './signed-url.ts';

export interface BulkPluginOptions {
  config: Config;
}

const bulkPlugin: FastifyPluginAsync<BulkPluginOptions> = async (app, { config }) => {
  const { bulk } = config;
  const signer = createSigner(bulk.signingSecret, config.auth.jwtSecret);
  const uploads = uploadsDir(config);
  app.jobs.define(importJob({ store: () => app.backend.bulk, spoolDir: bulk.spoolDir, uploadsDir: uploads, maxErrors: bulk.importMaxErrors }));
  app.jobs.define(exportJob({ users: () => app.backend.users, dir: bulk.exportsDir, ttlS: bulk.exportTtlS, signer }));
  app.jobs.define(cleanupJob({ exportsDir: bulk.exportsDir, spoolDir: bulk.spoolDir, leftoverMs: config.jobs.retentionMs }));
  app.jobs.schedule(CLEANUP_SCHEDULE);
  if (config.jobs.role !== 'worker') await app.register(bulkRoutes, { bulk, uploadsDir: uploads, signer });
};

export default bulkPlugin;
