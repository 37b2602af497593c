/**
 * A budget of work in flight, in units the caller chooses (rows of a page): a request takes its cost on entry
 * and gives it back when its answer is done. One that does not fit in what is left is refused at once instead
 * of queued, since what it would hold while queued (its socket, its client's patience) is what ran out. A
 * request costing more than the whole budget still runs when nothing else is in flight, so no valid request is
 * refused for ever.
 */
export class Budget {
  #used = 0;

  constructor(readonly capacity: number) {}

  get used(): number {
    return this.#used;
  }

  /** Takes `cost` and returns its release (idempotent), or undefined when it does not fit now. */
  tryTake(cost: number): (() => void) | undefined {
    if (this.#used > 0 && this.#used + cost > this.capacity) return undefined;
    this.#used += cost;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#used -= cost;
    };
  }
}
