/**
 * Helpers of the bulk tests: waiting for a job, following its events over real HTTP, making CSV files.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance } from 'fastify';

export interface JobView {
  id: string;
  state: string;
  progress: { done: number; total: number | null; detail?: Record<string, number> };
  attempts: number;
  error: string | null;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- each job kind has its own result shape
  result: any;
}

/** Polls GET /jobs/{id} until the job ended; returns it. */
export async function jobEnded(app: FastifyInstance, id: string, timeoutMs = 120_000): Promise<JobView> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const job = (await app.inject({ method: 'GET', url: `/jobs/${id}` })).json() as JobView;
    if (['succeeded', 'failed', 'cancelled'].includes(job.state)) return job;
    if (Date.now() > until) throw new Error(`job ${id} still ${job.state} after ${timeoutMs} ms`);
    await sleep(50);
  }
}

/** Every `event: job` snapshot of GET /jobs/{id}/events until the stream ends. */
export async function followEvents(base: string, id: string, headers: Record<string, string> = {}): Promise<JobView[]> {
  const res = await fetch(`${base}/jobs/${id}/events`, { headers });
  if (res.status !== 200) throw new Error(`events: ${res.status}`);
  const events: JobView[] = [];
  let text = '';
  for await (const chunk of res.body!) {
    text += Buffer.from(chunk).toString('utf8');
    let end: number;
    while ((end = text.indexOf('\n\n')) >= 0) {
      const block = text.slice(0, end);
      text = text.slice(end + 2);
      const data = block.split('\n').find((l) => l.startsWith('data: '));
      if (block.startsWith('event: job') && data) events.push(JSON.parse(data.slice(6)));
    }
  }
  return events;
}

/** `n` valid CSV rows after the header, each with a unique email carrying `tag` and its index. */
export function csvOf(n: number, tag: string): string {
  let s = 'name,email,age\r\n';
  for (let i = 0; i < n; i++) s += `User ${i},u${i}.${tag}@example.com,${i % 151}\r\n`;
  return s;
}
