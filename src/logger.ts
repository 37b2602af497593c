/**
 * Logger options: pino, JSON when stdout is not a terminal, readable (pino-pretty) when it is.
 *
 * Requests are logged by path and route only: query strings and bodies may hold personal data or credentials,
 * so they never reach a log line, and neither do credential headers.
 */
import type { FastifyServerOptions } from 'fastify';
import type { Config } from './config.ts';

export function loggerOptions(config: Pick<Config, 'logLevel'>): FastifyServerOptions['logger'] {
  const pretty = process.stdout.isTTY === true;
  return {
    level: config.logLevel,
    redact: {
      paths: ['req.headers.authorization', 'req.headers.cookie', 'req.headers["x-api-key"]', '*.password', '*.token'],
      censor: '[redacted]',
    },
    serializers: {
      req: (req: { method: string; url: string; id: string }) => ({
        method: req.method,
        path: req.url.split('?', 1)[0],
      }),
    },
    ...(pretty ? { transport: { target: 'pino-pretty', options: { translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' } } } : {}),
  };
}
