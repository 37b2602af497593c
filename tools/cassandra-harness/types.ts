/** The harness's public types and constants. */


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

export const DEFAULT_HEAP_MB = 512;
export const DEFAULT_START_TIMEOUT_MS = 120_000;
export const STOP_GRACE_MS = 20_000;
export const DEFAULT_CLUSTER_HOSTS = ['127.0.0.1', '127.0.0.2', '127.0.0.3'];

