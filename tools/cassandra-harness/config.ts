/** Each node's cassandra.yaml and logback configuration. */
import fs from 'node:fs';
import path from 'node:path';

export interface NodeConfig {
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
export function yamlSettings(cfg: NodeConfig): Record<string, unknown> {
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
export function renderYaml(settings: Record<string, unknown>): string {
  return Object.entries(settings)
    .map(([key, value]) => `${key}: ${JSON.stringify(value)}`)
    .join('\n') + '\n';
}

/** Log at INFO to stdout, which the harness sends to `<dir>/cassandra.log`. The bundled config logs at DEBUG. */
export const LOGBACK_XML = `<configuration>
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%-5level %date{HH:mm:ss,SSS} [%thread] %logger{0} %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="STDOUT"/></root>
  <logger name="com.thinkaurelius.thrift" level="ERROR"/>
</configuration>
`;

export function writeConfig(cfg: NodeConfig): void {
  for (const sub of ['conf', 'conf/triggers', 'data', 'commitlog', 'saved_caches', 'tmp']) {
    fs.mkdirSync(path.join(cfg.dir, sub), { recursive: true });
  }
  fs.writeFileSync(path.join(cfg.dir, 'conf', 'cassandra.yaml'), renderYaml(yamlSettings(cfg)));
  fs.writeFileSync(path.join(cfg.dir, 'conf', 'logback.xml'), LOGBACK_XML);
}

