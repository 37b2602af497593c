/**
 * The admission rule of the cost budget (src/platform/lib/budget.ts) that PAGE_ROWS_IN_FLIGHT uses: what fits is
 * admitted, what does not is refused at once, a request larger than the whole budget runs when nothing else is in
 * flight, and a release counts once.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Budget } from '../src/platform/lib/budget.ts';

test('admits what fits, refuses what does not, and takes it back once per release', () => {
  const budget = new Budget(20_000);
  const a = budget.tryTake(10_000);
  const b = budget.tryTake(10_000);
  assert.ok(a && b, 'two pages of 10,000 fit in 20,000');
  assert.equal(budget.tryTake(1), undefined, 'a third is refused at once');
  a();
  a();
  assert.equal(budget.used, 10_000, 'a second release of the same page gives nothing back');
  assert.ok(budget.tryTake(10_000), 'the freed rows are admitted again');
});

test('a request larger than the whole budget runs alone, never beside another', () => {
  const budget = new Budget(5_000);
  const big = budget.tryTake(10_000);
  assert.ok(big, 'admitted when nothing else is in flight');
  assert.equal(budget.tryTake(1), undefined, 'nothing else while it runs');
  big();
  const small = budget.tryTake(100);
  assert.ok(small);
  assert.equal(budget.tryTake(10_000), undefined, 'and it waits for an empty budget');
});
