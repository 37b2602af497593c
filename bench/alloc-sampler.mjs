// Preloaded into Spate by `npm run bench -- --profile <scenario> --alloc` (node --import): V8's sampling heap
// profiler with the objects that minor and major GCs collected kept in, so the profile shows what the load
// allocates (what the garbage collector then pays for), not only what is alive at the end. Written to
// $SPATE_ALLOC_PROFILE as a .heapprofile (Chrome DevTools reads it) when the process exits.
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';

const out = process.env.SPATE_ALLOC_PROFILE;
if (out) {
  const session = new Session();
  session.connect();
  session.post('HeapProfiler.startSampling', {
    samplingInterval: 64 * 1024,
    includeObjectsCollectedByMajorGC: true,
    includeObjectsCollectedByMinorGC: true,
  });
  // An in-process session answers synchronously, so this works in an 'exit' handler.
  process.once('exit', () => {
    session.post('HeapProfiler.stopSampling', (err, res) => {
      if (!err) writeFileSync(out, JSON.stringify(res.profile));
    });
  });
}
