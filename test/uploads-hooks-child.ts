/**
 * For test/uploads.test.ts, in a process of its own (the test runner keeps a promise hook on in its own): whether a
 * promise hook is on before upload requests and after them (one, then two at once), printed as one JSON line.
 */
import { executionAsyncId } from 'node:async_hooks';
import { createHash } from 'node:crypto';
import { startApp } from './support/app.ts';

/** True while a promise hook is on (Node 20): a promise's continuation then runs under an async id of its own. */
const hooked = async () => { await null; return executionAsyncId() !== 0; };

const app = await startApp(process.env.DATABASE_URL!, { UPLOADS_DIR: process.env.UPLOADS_DIR!, AUTH_MODE: 'off', LOG_LEVEL: 'silent' });
const TUS = { 'tus-resumable': '1.0.0' };
const statuses: number[] = [];
const create = async (length: number) => {
  const res = await app.inject({ method: 'POST', url: '/uploads', headers: { ...TUS, 'upload-length': String(length) } });
  statuses.push(res.statusCode);
  return res.headers.location as string;
};
const patch = async (url: string, body: string) => {
  const digest = createHash('sha256').update(body).digest('base64');
  const res = await app.inject({
    method: 'PATCH', url, payload: body,
    headers: { ...TUS, 'content-type': 'application/offset+octet-stream', 'upload-offset': '0', 'upload-checksum': `sha256 ${digest}` },
  });
  statuses.push(res.statusCode);
};

const before = await hooked();
await patch(await create(5), 'hello');
const afterOne = await hooked();
// The first of two at once to finish must leave the other its facts; the last one out turns the hook off.
const [a, b] = [await create(5), await create(5)];
await Promise.all([patch(a, 'world'), patch(b, '12345')]);
const afterTwoAtOnce = await hooked();
await app.close();
console.log(JSON.stringify({ before, afterOne, afterTwoAtOnce, statuses }));
