/**
 * tus-js-client in a process of its own (test/uploads-client.ts), as a user's program would run it: the uploads
 * tests and the bulk story cut an upload half-way by killing that process and resume it with a new one.
 */
import { spawn } from 'node:child_process';

/**
 * A client killed half-way through its file. In chunks of 1 MiB, so that at most one chunk is in flight when it dies:
 * sent in one body, the rest of the file could already sit in the loopback socket's buffers and still reach the
 * server after the kill (CI saw a 16 MiB upload arrive whole).
 */
export const CUT_HALF_WAY = (size: number) => ({ chunkSize: 1024 * 1024, dieAfterBytes: size / 2 });

export interface ClientRun { events: Record<string, unknown>[]; code: number | null; signal: string | null }

/** Runs test/uploads-client.ts with `order` (its header says what it takes) until it exits. */
export function tusClient(order: Record<string, unknown>): Promise<ClientRun> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'test/uploads-client.ts', JSON.stringify(order)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({
    events: out.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>), code, signal,
  })));
}
