/**
 * Hostile slow clients over raw sockets: one that sends its headers a line at a time and never ends them
 * (slowloris), and one that sends complete headers and then trickles the body a byte at a time. Each reports
 * when the server closed the connection and the first bytes it answered.
 */
import { connect } from 'node:net';

export interface SlowClient {
  /** Resolves when the server closed the connection: after how many ms, and the start of what it answered. */
  closed: Promise<{ ms: number; answer: string }>;
  destroy(): void;
}

/** Writes `first`, then `next()` every `everyMs` until the server closes the connection. */
function trickle(port: number, first: string, next: () => string, everyMs: number): SlowClient {
  const started = performance.now();
  const socket = connect({ port, host: '127.0.0.1' });
  let answer = '';
  let timer: NodeJS.Timeout | undefined;
  socket.setEncoding('utf8');
  socket.on('data', (d: string) => { if (answer.length < 400) answer += d; });
  socket.once('connect', () => {
    socket.write(first);
    timer = setInterval(() => { if (socket.writable) socket.write(next()); }, everyMs);
  });
  socket.on('error', () => {});
  const closed = new Promise<{ ms: number; answer: string }>((resolve) => {
    socket.once('close', () => {
      clearInterval(timer);
      resolve({ ms: performance.now() - started, answer });
    });
  });
  return { closed, destroy: () => socket.destroy() };
}

/** A request line, then one more header line every `everyMs`, never the blank line that ends the headers. */
export function slowHeaders(port: number, everyMs: number): SlowClient {
  let n = 0;
  return trickle(port, 'GET /users HTTP/1.1\r\nHost: localhost\r\n', () => `X-Slow-${n++}: a\r\n`, everyMs);
}

/** `POST path` with a JSON body of `length` bytes announced, then sent one byte every `everyMs`. */
export function slowUpload(port: number, path: string, length: number, everyMs: number): SlowClient {
  const body = JSON.stringify({ name: 'Slow', email: 'slow.upload@example.com', age: 30 }).padEnd(length, ' ');
  let i = 0;
  return trickle(
    port,
    `POST ${path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`,
    () => body[i++] ?? '',
    everyMs,
  );
}
