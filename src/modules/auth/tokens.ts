/**
 * Token formats: access JWTs (HS256; signed with jose, verified here), opaque refresh tokens and API keys, and
 * their digests.
 *
 * Access tokens are short-lived and checked strictly: only HS256 is accepted (so `alg: none` and RS/HS
 * confusion fail), `typ` must be `at+jwt`, no `crit` header, and `iss`, `aud`, `exp`, `nbf`, `iat`, `sub`, `sid`
 * must all be present and right. Verification is synchronous node:crypto HMAC, not jose's `jwtVerify`: that one
 * imports the secret as a WebCrypto key and verifies through WebCrypto's promise machinery on every call, which
 * the profile of the access-token path showed as ~40% of the main thread (docs/benchmarks.md, Analysis). A token
 * that verified is remembered, keyed by its whole text, until it expires, so a client's later requests skip the
 * HMAC and the JSON parsing; this caches only what the signature proves, never session or account state, which the
 * authenticator still checks on every request. Keyed by the text, not a digest: even the one-shot SHA-256 was 2.0%
 * of the access-token path under load (docs/benchmarks.md, round three), the Map's own string hash is nearly free,
 * and a hit is as exact (the same full text; an altered token misses and is verified). Only tokens that verified
 * are kept, each at most until its expiry plus the clock tolerance, in a process that holds the signing secret. Refresh tokens and API keys are 256 random bits with a recognisable prefix; only their SHA-256 digest is
 * stored. A plain digest suffices (no salt, no slow hash): the inputs are uniformly random, not guessable
 * passwords, and a fast digest keeps the per-request key lookup cheap.
 */
import { createHmac, hash, randomBytes, timingSafeEqual } from 'node:crypto';
import { SignJWT } from 'jose';

export const API_KEY_PREFIX = 'spk_';
export const REFRESH_PREFIX = 'spr_';
const OPAQUE = /^[A-Za-z0-9_-]{43}$/;

export interface AccessClaims {
  /** Account id. */
  sub: string;
  /** Session (refresh-token family) id. */
  sid: string;
}

export interface TokenSigner {
  sign(claims: AccessClaims): Promise<string>;
  /** The claims of a valid token, or null for anything else (never throws). */
  verify(token: string): AccessClaims | null;
  readonly ttlS: number;
}

const ALG = 'HS256';
const TYP = 'at+jwt';
/** Clock skew allowed between instances when checking exp and nbf. */
const CLOCK_TOLERANCE_S = 5;
/** Verified tokens remembered at most (under 1 KB each: the token and its claims); past it the oldest is forgotten first. */
const VERIFIED_CACHE_MAX = 10_000;
const B64URL = /^[A-Za-z0-9_-]+$/;

export function createTokenSigner(opts: { secret: string; issuer: string; audience: string; ttlS: number }): TokenSigner {
  const key = new TextEncoder().encode(opts.secret);
  const hmacKey = Buffer.from(key);
  /** Token -> its claims and the epoch ms until which they hold (exp plus the clock tolerance). */
  const verified = new Map<string, { claims: AccessClaims; untilMs: number }>();

  /** The claims of a token whose signature and claims check out now, else null. */
  function check(token: string): { claims: AccessClaims; untilMs: number } | null {
    const parts = token.split('.');
    if (parts.length !== 3 || !parts.every((p) => B64URL.test(p))) return null;
    const [head, body, signature] = parts as [string, string, string];
    const expected = createHmac('sha256', hmacKey).update(`${head}.${body}`).digest('base64url');
    if (expected.length !== signature.length || !timingSafeEqual(Buffer.from(expected), Buffer.from(signature))) return null;
    const header = parseJson(head);
    if (!header || header.alg !== ALG || header.typ !== TYP || 'crit' in header || 'b64' in header) return null;
    const c = parseJson(body);
    if (!c || typeof c.sub !== 'string' || typeof c.sid !== 'string' || c.iss !== opts.issuer) return null;
    if (!(c.aud === opts.audience || (Array.isArray(c.aud) && c.aud.includes(opts.audience)))) return null;
    if (![c.exp, c.nbf, c.iat].every((n) => typeof n === 'number' && Number.isFinite(n))) return null;
    const now = Math.floor(Date.now() / 1000);
    if ((c.exp as number) <= now - CLOCK_TOLERANCE_S || (c.nbf as number) > now + CLOCK_TOLERANCE_S) return null;
    return { claims: { sub: c.sub, sid: c.sid }, untilMs: ((c.exp as number) + CLOCK_TOLERANCE_S) * 1000 };
  }

  return {
    ttlS: opts.ttlS,
    async sign({ sub, sid }) {
      const now = Math.floor(Date.now() / 1000);
      return new SignJWT({ sid })
        .setProtectedHeader({ alg: ALG, typ: TYP })
        .setSubject(sub)
        .setIssuer(opts.issuer)
        .setAudience(opts.audience)
        .setIssuedAt(now)
        .setNotBefore(now)
        .setExpirationTime(now + opts.ttlS)
        .setJti(randomBytes(12).toString('base64url'))
        .sign(key);
    },
    verify(token) {
      const hit = verified.get(token);
      if (hit) {
        if (Date.now() < hit.untilMs) return hit.claims;
        verified.delete(token);
      }
      let entry: ReturnType<typeof check>;
      try {
        entry = check(token);
      } catch {
        return null;
      }
      if (!entry) return null;
      if (verified.size >= VERIFIED_CACHE_MAX) verified.delete(verified.keys().next().value!);
      verified.set(token, entry);
      return entry.claims;
    },
  };
}

/** A base64url JSON object, or null (never throws). */
function parseJson(part: string): Record<string, unknown> | null {
  try {
    const value: unknown = JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
    return value !== null && typeof value === 'object' && !Array.isArray(value) ? value as Record<string, unknown> : null;
  } catch {
    return null;
  }
}

/**
 * SHA-256 of a token or key, hex: what the store keeps and looks up by (an API key's on every request).
 * One-shot `crypto.hash` (Node 20.12+), not `createHash`: the same digest without a Hash object per call, which the
 * profile showed (Hash, update, digest: 2.6% of the path).
 */
export const digest = (secret: string): string => hash('sha256', secret, 'hex');

const opaque = (prefix: string) => `${prefix}${randomBytes(32).toString('base64url')}`;

export const newRefreshToken = () => opaque(REFRESH_PREFIX);
export const newApiKey = () => opaque(API_KEY_PREFIX);

/** True when `value` has the shape of one of our opaque secrets with `prefix` (cheap check before any lookup). */
export const isOpaque = (value: string, prefix: string): boolean =>
  value.startsWith(prefix) && OPAQUE.test(value.slice(prefix.length));
