/**
 * The seams of tracing: what the database layer, the job runner, the logger and outgoing requests call, whether
 * tracing is on or not (docs/tracing.md).
 *
 * This file imports nothing. With tracing off (the default) no OpenTelemetry module is ever loaded: every helper
 * here finds no tracer and returns at once (an empty object, the work itself). With it on, src/process/server.ts
 * loads ./sdk.ts with a dynamic import before the app, and the SDK installs itself here with `installTracer`.
 */

/** A database system as OpenTelemetry names it (`db.system.name`). */
export type DbSystem = 'postgresql' | 'cassandra';

/** A database call's span, ended once with the call's outcome: the catalogue's error kind when it failed. */
export interface DbSpan {
  end(failure?: string): void;
}

/** What a job carries for its span: the trace context stored with it at enqueue (W3C `traceparent`). */
export interface TracedJob {
  id: string;
  kind: string;
  attempts: number;
  traceparent: string | null;
}

/** What the SDK does for the seams below (src/platform/tracing/sdk.ts). */
export interface Tracer {
  /** A span for one database call, a child of the active span; none when nothing is being traced. */
  dbCall(system: DbSystem, operation: string, statement: string | undefined): DbSpan | undefined;
  /** The W3C headers (`traceparent`, `tracestate` when set) of the active span; empty when there is none. */
  headers(): Record<string, string>;
  /** Runs `work` in the job's span, a child of the context stored with the job (a root span when it has none). */
  inJob<T>(job: TracedJob, work: () => Promise<T>): Promise<T>;
  /** `trace_id` and `span_id` of the active span, for the log line being written. */
  logFields(): Record<string, string>;
}

let active: Tracer | undefined;

/** Called once by the SDK when it starts; `undefined` when it shuts down. */
export function installTracer(tracer: Tracer | undefined): void {
  active = tracer;
}

/** The installed tracer; `undefined` while tracing is off. The seams test this first, so off costs one read. */
export const tracer = (): Tracer | undefined => active;

/**
 * The headers that carry the current trace into an outgoing request (a webhook delivery): `traceparent`, and
 * `tracestate` when there is one. Empty while tracing is off or nothing is being traced.
 */
export function traceHeaders(): Record<string, string> {
  return active?.headers() ?? {};
}

/** The `traceparent` to store with a job being enqueued now, so that its run joins this trace; null if none. */
export function currentTraceparent(): string | null {
  return active?.headers().traceparent ?? null;
}

/** Runs a job's handler in the job's span when tracing is on; just runs it when off. */
export function runTracedJob<T>(job: TracedJob, work: () => Promise<T>): Promise<T> {
  return active ? active.inJob(job, work) : work();
}
