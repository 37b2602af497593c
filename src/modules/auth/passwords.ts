/**
 * Password hashing: argon2id (@node-rs/argon2, prebuilt, runs off the event loop) with OWASP's parameters
 * (19 MiB, 2 passes, 1 lane). Verification compares in constant time inside the library.
 *
 * `verifyOrBurn` does the same work whether or not the account exists: an unknown email is checked against a
 * dummy hash, so a login's timing tells nothing about which emails are registered.
 */
import { randomBytes } from 'node:crypto';
import { hash, verify } from '@node-rs/argon2';

/** `Algorithm.Argon2id` (a const enum, which isolated modules cannot import). */
const ARGON2ID = 2;
const OPTIONS = { algorithm: ARGON2ID, memoryCost: 19_456, timeCost: 2, parallelism: 1 } as const;

export const hashPassword = (password: string): Promise<string> => hash(password, OPTIONS);

let dummy: Promise<string> | undefined;

/**
 * True when `password` matches `stored`. With `stored` undefined (no such account) a dummy hash with the same
 * parameters is verified instead and the answer is false.
 */
export async function verifyOrBurn(stored: string | undefined, password: string): Promise<boolean> {
  dummy ??= hashPassword(randomBytes(16).toString('base64url'));
  const target = stored ?? (await dummy);
  try {
    const ok = await verify(target, password);
    return ok && stored !== undefined;
  } catch {
    // A malformed stored hash is a failed login, never a 500 that would tell the account exists.
    return false;
  }
}
