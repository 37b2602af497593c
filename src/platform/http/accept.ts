/**
 * `Accept` negotiation (RFC 9110, section 12.5.1), written once for every route that offers several media types.
 *
 * Each offered type takes the quality of the most specific range that matches it (`type/subtype`, then
 * `type/*`, then `*\/*`); the highest quality above zero wins, and a tie goes to the server's order of
 * preference (the order of `offers`), since the order of the client's list carries no meaning.
 */

interface MediaRange { type: string; subtype: string; q: number }

function parseRange(part: string): MediaRange {
  const [range = '', ...params] = part.split(';');
  const [type = '', subtype = ''] = range.trim().toLowerCase().split('/');
  let q = 1;
  for (const p of params) {
    const [k, v] = p.split('=').map((x) => x.trim());
    if (k?.toLowerCase() === 'q' && v !== undefined) q = /^(0(\.\d{0,3})?|1(\.0{0,3})?)$/.test(v) ? Number(v) : 0;
  }
  return { type, subtype, q };
}

/** The quality of `mediaType` under the most specific matching range; 0 when none matches. */
function quality(ranges: readonly MediaRange[], mediaType: string): number {
  const [type, subtype] = mediaType.split('/');
  let best = -1;
  let q = 0;
  for (const r of ranges) {
    const specificity = r.type === type && r.subtype === subtype ? 2
      : r.type === type && r.subtype === '*' ? 1
        : r.type === '*' && r.subtype === '*' ? 0 : -1;
    if (specificity > best) {
      best = specificity;
      q = r.q;
    }
  }
  return q;
}

/**
 * The offered media type the client prefers, or `undefined` when it accepts none of them. No `Accept` (or an
 * empty one) accepts anything: the first offer.
 */
export function negotiate<T extends string>(accept: string | undefined, offers: readonly T[]): T | undefined {
  if (accept === undefined || accept.trim() === '') return offers[0];
  const ranges = accept.split(',').map(parseRange);
  let chosen: T | undefined;
  let bestQ = 0;
  for (const offer of offers) {
    const q = quality(ranges, offer);
    if (q > bestQ) {
      bestQ = q;
      chosen = offer;
    }
  }
  return chosen;
}
