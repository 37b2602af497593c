/**
 * Token formats: access JWTs (jose, HS256), opaque refresh tokens and API keys, and their digests.
 *
 * Access tokens are short-lived and checked strictly: only HS256 is accepted (so `alg: none` and RS/HS
 * confusion fail), `typ` must be `at+jwt`, and `iss`, `aud`, `exp`, `nbf`, `sub`, `sid` must all be present and
 * right. Refresh tokens and API keys are 256 random bits with a recognisable prefix; only their SHA-256 digest is
 * stored. A plain digest suffices (no salt, no slow hash): the inputs are uniformly random, not guessable
 * passwords, and a fast digest keeps the per-request key lookup cheap.
 */
import { createHash, randomBytes } from 'node:crypto';
import { SignJWT, jwtVerify } from 'jose';

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
  verify(token: string): Promise<AccessClaims | null>;
  readonly ttlS: number;
}

const ALG = 'HS256';
const TYP = 'at+jwt';
/** Clock skew allowed between instances when checking exp and nbf. */
const CLOCK_TOLERANCE_S = 5;

export function createTokenSigner(opts: { secret: string; issuer: string; audience: string; ttlS: number }): TokenSigner {
  const key = new TextEncoder().encode(opts.secret);
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
    async verify(token) {
      try {
        const { payload } = await jwtVerify(token, key, {
          algorithms: [ALG],
          typ: TYP,
          issuer: opts.issuer,
          audience: opts.audience,
          clockTolerance: CLOCK_TOLERANCE_S,
          requiredClaims: ['sub', 'sid', 'exp', 'nbf', 'iat'],
        });
        if (typeof payload.sub !== 'string' || typeof payload.sid !== 'string') return null;
        return { sub: payload.sub, sid: payload.sid };
      } catch {
        return null;
      }
    },
  };
}

/** SHA-256 of a token or key, hex: what the store keeps and looks up by. */
export const digest = (secret: string): string => createHash('sha256').update(secret).digest('hex');

const opaque = (prefix: string) => `${prefix}${randomBytes(32).toString('base64url')}`;

export const newRefreshToken = () => opaque(REFRESH_PREFIX);
export const newApiKey = () => opaque(API_KEY_PREFIX);

/** True when `value` has the shape of one of our opaque secrets with `prefix` (cheap check before any lookup). */
export const isOpaque = (value: string, prefix: string): boolean =>
  value.startsWith(prefix) && OPAQUE.test(value.slice(prefix.length));
