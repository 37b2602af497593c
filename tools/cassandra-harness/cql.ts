/** Waiting for a node's native protocol (CQL) port. */
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

/** Native protocol v3 OPTIONS frame: version, flags, stream (2 bytes), opcode 0x05, body length 0. */
export const OPTIONS_FRAME = Buffer.from([0x03, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00]);
export const OPCODE_SUPPORTED = 0x06;

/**
 * One CQL handshake probe. The server must answer OPTIONS with SUPPORTED. An open TCP port is not
 * enough, and a raw frame is much cheaper than a driver connection. Every Cassandra from 2.1 to
 * 5.0 speaks protocol v3.
 */
export function probeCql(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    let received = Buffer.alloc(0);
    const socket = net.connect({ host, port });
    const finish = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => finish(false));
    socket.once('error', () => finish(false));
    socket.once('connect', () => socket.write(OPTIONS_FRAME));
    socket.on('data', (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      if (received.length >= 5) finish(received[4] === OPCODE_SUPPORTED);
    });
  });
}

/**
 * Resolve once the node at host:port answers a CQL handshake. Reject after `timeoutMs`, or as soon
 * as `signal` aborts. The starter uses the signal to give up when the JVM exits.
 */
export async function waitForCql(host: string, port: number, timeoutMs: number, signal?: AbortSignal): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probeCql(host, port, 1_000))) {
    signal?.throwIfAborted();
    if (Date.now() >= deadline) throw new Error(`CQL on ${host}:${port} did not answer within ${timeoutMs} ms`);
    await sleep(200, undefined, signal ? { signal } : undefined);
  }
}

// ---------------------------------------------------------------------------------------------
// Configuration

