/**
 * Access-token verification (src/modules/auth/tokens.ts) against jose's `jwtVerify` with the same rules as the
 * oracle: every token here gets the same verdict from both, and the cache of verified tokens never outlives a
 * token's expiry or lets a changed token through.
 */
import assert from 'node:assert/strict';
import { createHmac, randomUUID } from 'node:crypto';
import { describe, test } from 'node:test';
import { SignJWT, base64url, jwtVerify } from 'jose';
import { createTokenSigner } from '../src/modules/auth/tokens.ts';

const SECRET = 'a-test-secret-of-at-least-thirty-two-bytes!';
const ISSUER = 'spate';
const AUDIENCE = 'spate-api';
const key = new TextEncoder().encode(SECRET);
const signer = () => createTokenSigner({ secret: SECRET, issuer: ISSUER, audience: AUDIENCE, ttlS: 900 });
const now = () => Math.floor(Date.now() / 1000);
const sub = randomUUID();
const sid = randomUUID();

function forge(o: { header?: Record<string, unknown>; claims?: Record<string, unknown>; secret?: Uint8Array } = {}): Promise<string> {
  const t = now();
  return new SignJWT({ sub, sid, iss: ISSUER, aud: AUDIENCE, iat: t, nbf: t, exp: t + 300, jti: 'j', ...o.claims })
    .setProtectedHeader({ alg: 'HS256', typ: 'at+jwt', ...o.header } as { alg: string })
    .sign(o.secret ?? key);
}
/** Signs any header and payload with the secret, bypassing jose's own checks on what it signs. */
async function raw(header: unknown, payload: unknown): Promise<string> {
  const h = base64url.encode(JSON.stringify(header));
  const p = base64url.encode(JSON.stringify(payload));
  return `${h}.${p}.${createHmac('sha256', Buffer.from(key)).update(`${h}.${p}`).digest('base64url')}`;
}
const claims = () => ({ sub, sid, iss: ISSUER, aud: AUDIENCE, iat: now(), nbf: now(), exp: now() + 300 });

async function oracle(token: string): Promise<boolean> {
  try {
    const { payload } = await jwtVerify(token, key, {
      algorithms: ['HS256'], typ: 'at+jwt', issuer: ISSUER, audience: AUDIENCE, clockTolerance: 5,
      requiredClaims: ['sub', 'sid', 'exp', 'nbf', 'iat'],
    });
    return typeof payload.sub === 'string' && typeof payload.sid === 'string';
  } catch {
    return false;
  }
}

const cases: [string, boolean, () => Promise<string>][] = [
  ['genuine', true, () => forge()],
  ['audience in an array', true, () => forge({ claims: { aud: ['other', AUDIENCE] } })],
  ['expired 3 s ago (within the 5 s tolerance)', true, () => forge({ claims: { exp: now() - 3 } })],
  ['expired 60 s ago', false, () => forge({ claims: { exp: now() - 60 } })],
  ['nbf 3 s ahead (within tolerance)', true, () => forge({ claims: { nbf: now() + 3 } })],
  ['nbf an hour ahead', false, () => forge({ claims: { nbf: now() + 3600 } })],
  ['alg none', false, async () => `${base64url.encode(JSON.stringify({ alg: 'none', typ: 'at+jwt' }))}.${base64url.encode(JSON.stringify(claims()))}.`],
  ['alg HS512', false, () => forge({ header: { alg: 'HS512' } })],
  ['typ JWT', false, () => forge({ header: { typ: 'JWT' } })],
  ['no typ', false, () => raw({ alg: 'HS256' }, claims())],
  ['crit header', false, () => raw({ alg: 'HS256', typ: 'at+jwt', crit: ['exp'] }, claims())],
  ['b64 false', false, () => raw({ alg: 'HS256', typ: 'at+jwt', b64: false, crit: ['b64'] }, claims())],
  ['wrong secret', false, () => forge({ secret: new TextEncoder().encode('another-secret-that-is-32-bytes-long!!') })],
  ['wrong issuer', false, () => forge({ claims: { iss: 'evil' } })],
  ['wrong audience', false, () => forge({ claims: { aud: 'other-api' } })],
  ['no sid', false, () => forge({ claims: { sid: undefined } })],
  ['sid a number', false, () => forge({ claims: { sid: 42 } })],
  ['no sub', false, () => forge({ claims: { sub: undefined } })],
  ['no exp', false, () => raw({ alg: 'HS256', typ: 'at+jwt' }, { ...claims(), exp: undefined })],
  ['no nbf', false, () => raw({ alg: 'HS256', typ: 'at+jwt' }, { ...claims(), nbf: undefined })],
  ['no iat', false, () => raw({ alg: 'HS256', typ: 'at+jwt' }, { ...claims(), iat: undefined })],
  ['exp a string', false, () => raw({ alg: 'HS256', typ: 'at+jwt' }, { ...claims(), exp: String(now() + 300) })],
  ['payload an array', false, () => raw({ alg: 'HS256', typ: 'at+jwt' }, [claims()])],
  ['tampered payload, signature kept', false, async () => {
    const [h, , s] = (await forge()).split('.');
    return `${h}.${base64url.encode(JSON.stringify({ ...claims(), exp: now() + 86_400 }))}.${s}`;
  }],
  ['tampered signature', false, async () => { const t = await forge(); return t.slice(0, -2) + (t.endsWith('AA') ? 'BB' : 'AA'); }],
  ['four parts', false, async () => `${await forge()}.x`],
  ['not a JWT', false, async () => 'not-a-token'],
  ['empty', false, async () => ''],
];

describe('access-token verification agrees with jose', () => {
  for (const [label, valid, make] of cases) {
    test(label, async () => {
      const token = await make();
      assert.equal(await oracle(token), valid, `jose's verdict on "${label}" is not what this case expects`);
      const s = signer();
      const got = s.verify(token);
      assert.equal(got !== null, valid, label);
      if (valid) assert.deepEqual(got, { sub: (JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as { sub: string }).sub, sid });
      // The second look comes from the cache: same verdict.
      assert.equal(s.verify(token) !== null, valid, `${label}, again`);
    });
  }

  test('stricter than jose on one point: a padded signature (which jose decodes) is refused', async () => {
    const token = `${await forge()}=`;
    assert.equal(await oracle(token), true);
    assert.equal(signer().verify(token), null, 'only the unpadded base64url that JWS prescribes (RFC 7515 §2) is accepted');
  });

  test('tokens it signs verify, with their claims', async () => {
    const s = signer();
    const token = await s.sign({ sub, sid });
    assert.ok(await oracle(token));
    assert.deepEqual(s.verify(token), { sub, sid });
  });
});

describe('the cache of verified tokens', () => {
  test('a cached token stops verifying once it expires (beyond the clock tolerance)', async (t) => {
    const s = signer();
    const token = await forge({ claims: { exp: now() + 60 } });
    assert.deepEqual(s.verify(token), { sub, sid });
    t.mock.timers.enable({ apis: ['Date'], now: Date.now() + 64_000 });
    assert.deepEqual(s.verify(token), { sub, sid }, 'within the tolerance it still holds');
    t.mock.timers.setTime(Date.now() + 2_000);
    assert.equal(s.verify(token), null, 'expired: the cached verdict must not outlive exp');
    t.mock.timers.reset();
  });

  test('a token changed after a genuine one was cached is refused', async () => {
    const s = signer();
    const token = await forge();
    assert.ok(s.verify(token));
    const [h, p, sig] = token.split('.') as [string, string, string];
    const other = base64url.encode(JSON.stringify({ ...JSON.parse(Buffer.from(p, 'base64url').toString()), sub: randomUUID() }));
    assert.equal(s.verify(`${h}.${other}.${sig}`), null);
    assert.equal(s.verify(`${h}.${p}.${sig.slice(0, -1)}${sig.endsWith('A') ? 'B' : 'A'}`), null);
  });

  test('another signer (another secret) does not share the cache', async () => {
    const a = signer();
    const b = createTokenSigner({ secret: 'a-different-secret-of-thirty-two-bytes-or-more', issuer: ISSUER, audience: AUDIENCE, ttlS: 900 });
    const token = await forge();
    assert.ok(a.verify(token));
    assert.equal(b.verify(token), null);
  });
});
