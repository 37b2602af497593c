/** One JVM per node: spawning, signals, and the guards that keep a node from outliving the test process. */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import type net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { STOP_GRACE_MS, type CassandraNode } from './types.ts';
import { findJava, javaArgs } from './java.ts';
import { canBind } from './ports.ts';
import { waitForCql } from './cql.ts';
import type { NodeConfig } from './config.ts';
import { settlesWithin } from './index.ts';

export const liveJvms = new Set<ChildProcess>();
export const tempDirs = new Set<string>();
let exitHookInstalled = false;

/**
 * On a normal exit, SIGKILL every JVM we started and remove our temp dirs. Set
 * CASSANDRA_KEEP_DIRS=1 to keep the dirs for post-mortems.
 */
export function installExitHook(): void {
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
export function signal(child: ChildProcess, sig: NodeJS.Signals): void {
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
export function spawnOrphanGuard(pid: number): ChildProcess {
  const guard = spawn('sh', ['-c', `read _unused; kill -9 ${pid} 2>/dev/null`], {
    stdio: ['pipe', 'ignore', 'ignore'],
  });
  guard.unref();
  (guard.stdin as net.Socket | null)?.unref();
  return guard;
}

/** The last `lines` lines of a log file, for error messages. */
export function tailOf(file: string, lines = 40): string {
  try {
    return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/** One JVM run: the process, its guard, and a promise that settles when it exits. */
export interface Run {
  child: ChildProcess;
  exited: Promise<void>;
}

export function spawnJvm(java: string, cfg: NodeConfig, home: string, logFile: string): Run {
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

export class Node implements CassandraNode {
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

export function requireJava(): string {
  const java = findJava();
  if (!java) throw new Error('no java binary found (set JAVA_HOME or put java on PATH)');
  return java;
}

export function newTempDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cassandra-test-'));
  tempDirs.add(dir);
  return dir;
}

