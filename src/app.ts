/**
 * Builds the Spate application. The server and the tests both call `buildApp`, so tests exercise exactly
 * what production runs.
 */
import Fastify, { type FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { Config } from './config.ts';
import { loggerOptions } from './logger.ts';
import docs from './http/docs.ts';
import errorHandling from './http/errors.ts';
import { AccessLogController } from './http/log-controller.ts';
import requestContext, { genReqId } from './http/request-context.ts';
import { formatValidationErrors, validatorCompiler } from './http/validation.ts';
import healthRoutes from './ops/health.ts';
import storage from './plugins/storage.ts';
import type { UsersRepository } from './storage/repository.ts';
import usersRoutes from './users/routes.ts';

export interface BuildOptions {
  /** A repository to use instead of opening the configured backend (the caller closes it). */
  repository?: UsersRepository;
  /** Logger override; tests pass `false` or a level. */
  logger?: boolean | { level: string };
}

export async function buildApp(config: Config, opts: BuildOptions = {}): Promise<FastifyInstance> {
  const app = Fastify({
    logger: opts.logger ?? loggerOptions(config),
    genReqId,
    requestIdHeader: false,
    logController: new AccessLogController(),
    bodyLimit: config.bodyLimit,
    schemaErrorFormatter: formatValidationErrors,
    return503OnClosing: true,
    forceCloseConnections: 'idle',
  }).withTypeProvider<TypeBoxTypeProvider>();
  app.setValidatorCompiler(validatorCompiler);

  await app.register(errorHandling);
  await app.register(requestContext);
  await app.register(docs);
  await app.register(storage, { config, repository: opts.repository });
  await app.register(healthRoutes);
  await app.register(usersRoutes, { batchMax: config.batchMax });
  return app;
}
