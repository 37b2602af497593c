/**
 * A tus client process for test/uploads.test.ts: tus-js-client, the protocol's own client, streaming a file from
 * disk as a user's program would. Told by one JSON argument what to do:
 * `{ endpoint | uploadUrl, file, headers?, chunkSize?, dieAfterBytes? }`. Prints one JSON line per event
 * (`{"url"}` as soon as the upload exists, `{"done"}`, `{"error"}`); with `dieAfterBytes` it kills itself with
 * SIGKILL mid-body once that many bytes were sent, as a crashed client or a cut connection would (bytes the kernel
 * already holds may still arrive: give a `chunkSize` to bound how many).
 */
import { createReadStream } from 'node:fs';
import { Upload } from 'tus-js-client';

interface Order {
  endpoint?: string;
  uploadUrl?: string;
  file: string;
  headers?: Record<string, string>;
  chunkSize?: number;
  dieAfterBytes?: number;
}

const order = JSON.parse(process.argv[2]!) as Order;
const say = (event: object) => process.stdout.write(`${JSON.stringify(event)}\n`);

const upload = new Upload(createReadStream(order.file), {
  endpoint: order.endpoint,
  uploadUrl: order.uploadUrl,
  headers: order.headers ?? {},
  chunkSize: order.chunkSize ?? Number.POSITIVE_INFINITY,
  retryDelays: null,
  metadata: { filename: 'users.csv' },
  onUploadUrlAvailable: () => say({ url: upload.url }),
  onProgress: (sent) => {
    if (order.dieAfterBytes !== undefined && sent >= order.dieAfterBytes) process.kill(process.pid, 'SIGKILL');
  },
  onSuccess: () => say({ done: true, url: upload.url }),
  onError: (err) => {
    say({ error: err.message });
    process.exitCode = 1;
  },
});
upload.start();
