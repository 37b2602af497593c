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
      // Credentials wherever a careless log call might put them: request headers, bodies, token responses.
      paths: [
        'req.headers.authorization', 'req.headers.cookie', 'req.headers["x-api-key"]',
        'headers.authorization', 'headers.cookie', 'headers["x-api-key"]',
        '*.headers.authorization', '*.headers["x-api-key"]', 'res.headers["set-cookie"]',
        'password', 'token', 'access_token', 'refresh_token', 'key', 'secret',
        '*.password', '*.token', '*.access_token', '*.refresh_token', '*.key', '*.secret', '*.jwtSecret', '*.metricsToken',
      ],
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
