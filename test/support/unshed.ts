/**
 * Load shedding off (`OVERLOAD_MAX_EVENT_LOOP_DELAY_MS=0`) for the apps and servers tests start, unless a test sets
 * it: the default (500 ms) is on in every mode, and a test's own work, or a CI machine running two suites beside a
 * Cassandra, can lag an event loop past it; a shed request would then fail a test that is not about overload.
 * test/chaos-overload.test.ts sets its own.
 */
export const UNSHED = { OVERLOAD_MAX_EVENT_LOOP_DELAY_MS: '0' } as const;
