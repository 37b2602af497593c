/**
 * Frees streamed body buffers while they are young, so a long request body costs scavenges instead of full
 * collections of the whole heap.
 *
 * Node's HTTP parser copies every body chunk of the socket into a Buffer of its own (64 KiB, off the V8 heap). A
 * Buffer is a small young object; its bytes are external memory, which V8 counts against the old generation's
 * headroom until a scavenge frees the object. Scavenges come when young objects fill the new space, which an
 * upload's few objects per chunk barely do: so the external bytes pile up to the headroom (30 MB with
 * `--heap-growing-percent=50` on Spate's heap) and V8 marks and compacts the whole heap, every 30 MB or so of body:
 * 159 full collections in one `npm run bench -- --uploads`, four clients of 1 GB each (docs/uploads.md, "Performance").
 *
 * The body's consumer reports what it took (`noteBodyBytes`); every 8 MiB of body, process-wide, asks V8 for a
 * minor collection, which frees the chunks already written at the price of a scavenge of a small young
 * generation (about a millisecond). The same run then made 39 full collections. `gc` exists only with
 * `--expose-gc`, which `npm start` and the image pass; elsewhere (tests that build the app in process) this is a
 * no-op and V8 schedules its collections alone.
 */

type MinorGc = (options: { type: 'minor' }) => void;

const gc = (globalThis as { gc?: MinorGc }).gc;

/** Body bytes between two requested scavenges: well inside the 30 MB headroom, so it is never reached. */
const SCAVENGE_EVERY_BYTES = 8 * 1024 * 1024;

let sinceScavenge = 0;

/** Tells that `bytes` more of a streamed body were consumed (and may now be garbage). */
export function noteBodyBytes(bytes: number): void {
  if (gc === undefined) return;
  sinceScavenge += bytes;
  if (sinceScavenge < SCAVENGE_EVERY_BYTES) return;
  sinceScavenge = 0;
  gc({ type: 'minor' });
}
