/** Free ports and loopback addresses for nodes. */
import net from 'node:net';

/** Whether something on `host` already holds `port`. */
export function canBind(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen({ host, port, exclusive: true }, () => server.close(() => resolve(true)));
  });
}

/** A port the kernel picks as free on `host`. */
export function ephemeralPort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen({ host, port: 0, exclusive: true }, () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/**
 * `count` distinct ports that are free on every host. The cluster needs this because all its nodes
 * share port numbers. It also fails fast, with a hint, when an address like 127.0.0.2 does not
 * exist. Linux routes all of 127/8 to `lo`, but macOS needs an alias.
 */
export async function findFreePorts(hosts: string[], count: number): Promise<number[]> {
  await assertLoopbackAddresses(hosts);
  const ports: number[] = [];
  for (let attempt = 0; ports.length < count && attempt < 100; attempt++) {
    const port = await ephemeralPort(hosts[0] ?? '127.0.0.1');
    if (ports.includes(port)) continue;
    const free = await Promise.all(hosts.map((h) => canBind(h, port)));
    if (free.every(Boolean)) ports.push(port);
  }
  if (ports.length < count) throw new Error(`could not find ${count} ports free on ${hosts.join(', ')}`);
  return ports;
}

export async function assertLoopbackAddresses(hosts: string[]): Promise<void> {
  for (const host of hosts) {
    try {
      await ephemeralPort(host);
    } catch (err) {
      throw new Error(
        `cannot bind to ${host} (${(err as Error).message}); on macOS run \`sudo ifconfig lo0 alias ${host}\``,
      );
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Readiness

