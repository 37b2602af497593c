// Preloaded into Spate by `npm run bench -- --profile <scenario> --alloc` (node --import): V8's sampling heap
// profiler with the objects that minor and major GCs collected kept in, so the profile shows what the load
// allocates (what the garbage collector then pays for), not only what is alive at the end. Written to
// $SPATE_ALLOC_PROFILE as a .heapprofile (Chrome DevTools reads it) when the process exits.
// SPATE_ALLOC_PROMOTED=1 leaves out what minor GCs collected: what survives the young generation, is promoted,
// and makes the old generation's full collections (the pauses in a 99th percentile).
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';

const out = process.env.SPATE_ALLOC_PROFILE;
if (out) {
  const session = new Session();
  session.connect();
  session.post('HeapProfiler.startSampling', {
    samplingInterval: 64 * 1024,
    includeObjectsCollectedByMajorGC: true,
    includeObjectsCollectedByMinorGC: process.env.SPATE_ALLOC_PROMOTED !== '1',
  });
  // An in-process session answers synchronously, so this works in an 'exit' handler.
  process.once('exit', () => {
    session.post('HeapProfiler.stopSampling', (err, res) => {
      if (!err) writeFileSync(out, JSON.stringify(res.profile));
    });
  });
}
