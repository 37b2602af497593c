/**
 * Text is stored as sent or refused (issue 11, findings 4 and 5), against a real PostgreSQL: invalid UTF-8 and
 * unpaired surrogates are 422 naming the field, a charset other than UTF-8 is 415, and a `__proto__` key is
 * ignored like any unknown field without ever reaching a prototype. Every refusal leaves the table unchanged.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { appOnNewDatabase, userBody } from './support/app.ts';

const ctx = appOnNewDatabase();

const countRows = async () => Number((await ctx.sql`SELECT count(*) AS n FROM users`)[0]!.n);

/** POSTs raw bytes as the body and checks that nothing was written. */
async function postRaw(url: string, body: Buffer | string, contentType = 'application/json') {
  const before = await countRows();
  const res = await ctx.app.inject({ method: 'POST', url, payload: body, headers: { 'content-type': contentType } });
  if (res.statusCode >= 400) assert.equal(await countRows(), before, 'a refused body writes nothing');
  return res;
}

describe('invalid UTF-8 and unpaired surrogates: 422 naming the field', () => {
  test('an invalid byte in a string names that field', async () => {
    const body = Buffer.concat([Buffer.from('{"name":"Jos'), Buffer.from([0xe9]), Buffer.from('","email":"jose@example.com","age":30}')]);
    const res = await postRaw('/users', body);
    assert.equal(res.statusCode, 422, res.body);
    assert.deepEqual(res.json().detail.map((i: { loc: unknown }) => i.loc), [['body', 'name']]);
    assert.equal(res.json().detail[0].type, 'string_unicode');
  });

  for (const [label, bytes] of [
    ['a truncated sequence', [0xe2, 0x82]],
    ['an encoded surrogate (CESU)', [0xed, 0xa0, 0x80]],
    ['an overlong encoding', [0xc0, 0xaf]],
    ['a byte never valid', [0xff]],
  ] as const) {
    test(`${label} in the email is refused`, async () => {
      const body = Buffer.concat([Buffer.from('{"name":"Ann","email":"a'), Buffer.from(bytes), Buffer.from('@example.com","age":3}')]);
      const res = await postRaw('/users', body);
      assert.equal(res.statusCode, 422, res.body);
      assert.deepEqual(res.json().detail[0].loc, ['body', 'email']);
    });
  }

  test('an invalid byte outside any string is a JSON decode error', async () => {
    const res = await postRaw('/users', Buffer.concat([Buffer.from('{"name":"A","age":3'), Buffer.from([0xff]), Buffer.from('}')]));
    assert.equal(res.statusCode, 422);
    assert.equal(res.json().detail[0].type, 'json_invalid');
  });

  test('a lone surrogate escape is refused, in a field and in a batch item', async () => {
    const one = await postRaw('/users', '{"name":"a\\ud800b","email":"a@example.com","age":1}');
    assert.equal(one.statusCode, 422, one.body);
    assert.deepEqual(one.json().detail[0].loc, ['body', 'name']);
    const low = await postRaw('/users', '{"name":"ok","email":"a@example.com","age":1,"x":"\\udc00"}');
    assert.equal(low.statusCode, 422, 'also in a field that would be ignored');
    const batch = await postRaw('/users/batch', JSON.stringify({ users: [userBody(), userBody()] }).replace('"Test', '"\\udfffTest'));
    assert.equal(batch.statusCode, 422, batch.body);
    assert.deepEqual(batch.json().detail[0].loc, ['body', 'users', 0, 'name']);
  });

  test('well-formed text beyond the BMP, escaped or not, and U+FFFD itself are stored as sent', async () => {
    const name = 'Zoë 😀 \uFFFD \u{1F600}';
    const escaped = '{"name":"Zo\\u00eb \\ud83d\\ude00 \\ufffd 😀","email":"z@example.com","age":5}';
    for (const body of [JSON.stringify({ name, email: 'z@example.com', age: 5 }), escaped]) {
      const res = await postRaw('/users', Buffer.from(body, 'utf8'));
      assert.equal(res.statusCode, 201, res.body);
      const stored = await ctx.sql`SELECT name FROM users WHERE id = ${res.json().id}`;
      assert.equal(stored[0]!.name, name);
      assert.equal(res.json().name, name);
    }
  });
});

describe('charset: only UTF-8', () => {
  test('charset=latin1 (and any other) is 415 in the contract shape', async () => {
    for (const charset of ['latin1', 'ISO-8859-1', '"windows-1252"', 'utf-16']) {
      const res = await postRaw('/users', Buffer.from(JSON.stringify(userBody({ name: 'José' })), 'latin1'), `application/json; charset=${charset}`);
      assert.equal(res.statusCode, 415, charset);
      assert.deepEqual(Object.keys(res.json()), ['detail']);
      assert.equal(typeof res.json().detail, 'string');
    }
  });

  test('charset=utf-8 in any case, quoted or not, and no charset are accepted', async () => {
    for (const ct of ['application/json; charset=utf-8', 'application/json;charset="UTF-8"', 'application/json; charset=utf8', 'application/json']) {
      const res = await postRaw('/users', JSON.stringify(userBody({ name: 'José' })), ct);
      assert.equal(res.statusCode, 201, `${ct}: ${res.body}`);
      assert.equal(res.json().name, 'José');
    }
  });
});

describe('__proto__ and constructor keys', () => {
  test('are ignored like unknown fields: 201, stored without them, no prototype touched', async () => {
    const body = '{"name":"Proto","email":"p@example.com","age":7,"__proto__":{"admin":true,"age":99},"constructor":{"prototype":{"admin":true}}}';
    const res = await postRaw('/users', body);
    assert.equal(res.statusCode, 201, res.body);
    assert.deepEqual(
      { name: res.json().name, age: res.json().age, keys: Object.keys(res.json()).sort() },
      { name: 'Proto', age: 7, keys: ['age', 'created_at', 'email', 'id', 'name', 'updated_at'] },
    );
    assert.equal(({} as { admin?: unknown }).admin, undefined);
    const stored = await ctx.sql`SELECT name, age FROM users WHERE id = ${res.json().id}`;
    assert.deepEqual({ ...stored[0] }, { name: 'Proto', age: 7 });
  });

  test('a nested __proto__ in a batch item and in a PATCH are ignored too', async () => {
    const batch = await postRaw('/users/batch', `[${JSON.stringify(userBody()).replace('{', '{"__proto__":{"x":1},')}]`);
    assert.equal(batch.statusCode, 201, batch.body);
    const id = batch.json().created[0].id;
    const patch = await ctx.app.inject({ method: 'PATCH', url: `/users/${id}`, payload: '{"__proto__":{"age":1},"age":44}', headers: { 'content-type': 'application/json' } });
    assert.equal(patch.statusCode, 200, patch.body);
    assert.equal(patch.json().age, 44);
  });

  test('malformed JSON is still 422 json_invalid, an empty body 422 missing', async () => {
    const bad = await postRaw('/users', '{"name":');
    assert.deepEqual([bad.statusCode, bad.json().detail[0].type], [422, 'json_invalid']);
    const empty = await ctx.app.inject({ method: 'POST', url: '/users', headers: { 'content-type': 'application/json' } });
    assert.deepEqual([empty.statusCode, empty.json().detail[0].type], [422, 'missing']);
  });
});
