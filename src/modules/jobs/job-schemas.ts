/**
 * The Job resource of the API (CONTRACT.md, "Jobs"): its public shape, the presenter that turns a stored job into
 * it, and the schemas of the job routes.
 */
import { Type, type Static, type TSchema } from 'typebox';
import { JOB_STATES, type Job, type JobState } from '../../platform/jobs/store.ts';

const Timestamp = Type.Unsafe<string>({ type: 'string', format: 'date-time', examples: ['2024-01-10T12:34:56.789Z'] });
const orNull = <T extends TSchema>(s: T) => Type.Union([s, Type.Null()]);
const State = Type.Unsafe<JobState>({ type: 'string', enum: JOB_STATES });

export const JobPublic = Type.Object(
  {
    id: Type.String({ format: 'uuid' }),
    kind: Type.String(),
    state: State,
    progress: Type.Object({
      done: Type.Integer(),
      total: orNull(Type.Integer()),
      detail: Type.Optional(Type.Record(Type.String(), Type.Integer(), {
        description: 'Named counts the job reports while it runs (bulk.import: read, written, rejected); absent when none',
      })),
    }),
    attempts: Type.Integer(),
    max_attempts: Type.Integer(),
    created_at: Timestamp,
    started_at: orNull(Timestamp),
    finished_at: orNull(Timestamp),
    error: orNull(Type.String()),
    result: Type.Unknown({ description: 'What the job produced once succeeded; null until then' }),
  },
  { title: 'Job' },
);
export type JobPublic = Static<typeof JobPublic>;

export const JobList = Type.Array(JobPublic);

export const JobIdParams = Type.Object({ id: Type.String({ description: 'Job id (UUID, any case)' }) });

export const JobListQuery = Type.Object({
  state: Type.Optional(State),
  kind: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
  limit: Type.Integer({ minimum: 1, maximum: 1000, default: 10 }),
  cursor: Type.Optional(Type.String({ description: 'Opaque cursor from X-Next-Cursor or the Link header' })),
});

/** The public shape of a stored job: owner, payload and scheduling internals stay inside. */
export function presentJob(j: Job): JobPublic {
  return {
    id: j.id,
    kind: j.kind,
    state: j.state,
    progress: j.progress,
    attempts: j.attempts,
    max_attempts: j.maxAttempts,
    created_at: j.createdAt,
    started_at: j.startedAt,
    finished_at: j.finishedAt,
    error: j.error,
    result: j.result,
  };
}
