/**
 * The in-process layer's admission policy (src/modules/cache/memory-layer.ts `offer`, with the frequency sketch of
 * src/modules/cache/frequency-sketch.ts): when full, a load is kept only when its key was asked for more often
 * lately than the entry it would evict, or that entry has expired; with room, or replacing its own entry, always.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { FrequencySketch } from '../src/modules/cache/frequency-sketch.ts';
import { MemoryLayer } from '../src/modules/cache/memory-layer.ts';

/** A request for `key` as the users cache makes it: a lookup, and on a miss a load offered to the layer. */
function request(layer: MemoryLayer<string>, key: string, expires = performance.now() + 60_000): boolean {
  if (layer.get(key) !== undefined) return true;
  layer.offer(key, key.toUpperCase(), 1, expires);
  return false;
}

describe('cache admission', () => {
  test('the sketch counts each key up to 15, and halves every count after ten times its capacity additions', () => {
    // A fixed seed: the collisions (which can only overcount) are the same in every run.
    const sketch = new FrequencySketch(1000, 42);
    for (let i = 0; i < 20; i++) sketch.increment('a');
    for (let i = 0; i < 3; i++) sketch.increment('b');
    assert.equal(sketch.frequency('a'), 15);
    assert.equal(sketch.frequency('b'), 3);
    assert.equal(sketch.frequency('never asked for'), 0);
    // 10,000 additions in all (a's saturated increments add nothing): every count halves.
    for (let i = 0; i < 10_000 - 18 - 1; i++) sketch.increment(`k${i}`);
    assert.equal(sketch.frequency('a'), 15, 'one addition short of the sample');
    sketch.increment('k-last');
    assert.equal(sketch.frequency('a'), 7);
    assert.ok(sketch.frequency('b') <= 2, `b halved (3 plus what collided, halved), got ${sketch.frequency('b')}`);
  });

  test('a full layer keeps the keys asked for often through a scan of keys asked for once', () => {
    // Within one sample period of the sketch (10 x 100 requests), so no count halves meanwhile. The sketch may
    // overcount a few keys of the scan into a win (fixed seed: the same few in every run); plain LRU keeps none.
    const layer = new MemoryLayer<string>(100, 1 << 20, 7);
    for (let round = 0; round < 2; round++) for (let i = 0; i < 100; i++) request(layer, `hot${i}`);
    for (let i = 0; i < 500; i++) assert.equal(request(layer, `scan${i}`), false);
    let hits = 0;
    for (let i = 0; i < 100; i++) if (request(layer, `hot${i}`)) hits++;
    assert.ok(hits >= 90, `at least 90 of the 100 hot keys survived the scan: ${hits}`);
    assert.ok(layer.stats().rejections >= 490, `at least 490 of the 500 loads of the scan not admitted: ${layer.stats().rejections}`);
  });

  test('a key asked for more often than the least recently used one takes its place; a tie does not', () => {
    const layer = new MemoryLayer<string>(2, 1 << 20);
    request(layer, 'a');
    request(layer, 'b');
    assert.equal(layer.offer('c', 'C', 1, performance.now() + 60_000), false, 'c never asked for: 0 against a\'s 1');
    layer.get('c');
    assert.equal(layer.offer('c', 'C', 1, performance.now() + 60_000), false, 'a tie (1 and 1) keeps a');
    layer.get('c');
    assert.equal(layer.offer('c', 'C', 1, performance.now() + 60_000), true, 'c asked for twice, a once');
    assert.equal(layer.get('a'), undefined, 'a, the least recently used, was evicted');
    assert.equal(layer.get('b'), 'B');
  });

  test('an expired entry gives way whatever its count; with room, or replacing its own entry, a load is always kept', () => {
    const layer = new MemoryLayer<string>(2, 1 << 20);
    const soon = performance.now() + 5;
    for (let i = 0; i < 5; i++) request(layer, 'old', soon);
    request(layer, 'b');
    const later = performance.now() + 60_000;
    assert.equal(layer.offer('b', 'B2', 1, later), true, 'its own entry: replaced');
    assert.equal(layer.offer('new', 'N', 1, later, soon + 1), true, 'old (asked for 5 times) has expired');
    assert.equal(layer.get('new'), 'N');
    assert.equal(layer.get('b'), 'B2');
    const roomy = new MemoryLayer<string>(10, 1 << 20);
    assert.equal(roomy.offer('never asked for', 'X', 1, later), true);
  });

  test('the byte bound counts too: a load that would overflow it faces the same comparison', () => {
    const layer = new MemoryLayer<string>(100, 20, 7);
    const later = performance.now() + 60_000;
    layer.get('a');
    layer.offer('a', 'A', 10, later);
    layer.get('b');
    layer.offer('b', 'B', 10, later);
    layer.get('big');
    assert.equal(layer.offer('big', 'BIG', 10, later), false, '20 bytes held, none to spare: a tie with a');
    layer.get('big');
    assert.equal(layer.offer('big', 'BIG', 10, later), true, 'asked for twice: a gives way');
    assert.deepEqual([layer.stats().entries, layer.stats().bytes, layer.get('a')], [2, 20, undefined]);
  });
});
