/**
 * The rules of a user's fields, written once. The request schemas (src/modules/users/user-schemas.ts) are built
 * from them, the Cassandra adapter enforces them (Cassandra has no CHECK constraints), and the PostgreSQL
 * migration 0001_users.sql states them as CHECK constraints; SQL cannot import, so
 * test/input-field-rules.test.ts asserts that the database refuses exactly what these constants refuse.
 *
 * It lives in src/db, beside the storage interface whose `User` it describes, because both sides that need it
 * may import from here: the modules above (modules -> db) and the adapters below (siblings in db). The platform
 * cannot (it sits under db), which is why the HTTP validation layer learns a rule's message from the schema
 * itself rather than from this file.
 */

/** `name`: 1..100 characters once surrounding white space is trimmed; the trimmed value is stored. */
export const NAME_MIN = 1;
export const NAME_MAX = 100;
/** What the request schema lets through before trimming, so a padded name is not refused for its padding. */
export const NAME_RAW_MAX = 1000;

/** `email`: at most 254 characters (RFC 5321 path limit), local part at most 64, each domain label at most 63. */
export const EMAIL_MIN = 3;
export const EMAIL_MAX = 254;
export const EMAIL_LOCAL_MAX = 64;
export const EMAIL_LABEL_MAX = 63;

/** `age`: an integer 0..150. */
export const AGE_MIN = 0;
export const AGE_MAX = 150;

/**
 * The name rule as a JSON Schema pattern (JSON Schema cannot trim): optional white space, a non-space character,
 * up to NAME_MAX - 2 more characters ending in a non-space one, optional white space. (NUL is left to the
 * store, which refuses it: `badInput`, 400.)
 */
export const NAME_PATTERN = `^\\s*\\S(?:[\\s\\S]{0,${NAME_MAX - 2}}\\S)?\\s*$`;

const ATOM = "[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+";
const LABEL = `[A-Za-z0-9](?:[A-Za-z0-9-]{0,${EMAIL_LABEL_MAX - 2}}[A-Za-z0-9])?`;

/**
 * The email rule as a JSON Schema pattern: an RFC 5322 dot-atom local part of at most EMAIL_LOCAL_MAX
 * characters, `@`, and a domain of at least two labels of at most EMAIL_LABEL_MAX letters, digits and inner
 * hyphens. ASCII only, as before. The whole is bounded by EMAIL_MAX (a `maxLength` beside it).
 */
export const EMAIL_PATTERN = `^(?=[^@]{1,${EMAIL_LOCAL_MAX}}@)${ATOM}(?:\\.${ATOM})*@(?:${LABEL}\\.)+${LABEL}$`;

const EMAIL = new RegExp(EMAIL_PATTERN, 'u');

/** A syntactically valid address, as the request schema checks it. */
export const isEmail = (s: string): boolean => s.length >= EMAIL_MIN && s.length <= EMAIL_MAX && EMAIL.test(s);

/**
 * Whether `s` has `min` to `max` characters (code points). Counting them walks the string, so it is done only
 * near a limit: a string of at most `max` UTF-16 units has at most `max` code points, and one of at least
 * `2 * min` units at least `min` (a code point is one or two units). An import checks millions of rows here.
 */
function charsWithin(s: string, min: number, max: number): boolean {
  if (s.length <= max && s.length >= 2 * min) return true;
  let n = 0;
  for (const _ of s) n++;
  return n >= min && n <= max;
}

/**
 * The fields of `input` outside the storage domain, the one both backends enforce (the CHECK constraints of
 * 0001_users.sql): lengths, the age range, no NUL. Email syntax is the API's rule (`isEmail`, in the request
 * schema); the store only bounds the length. A name is checked as stored, already trimmed. Absent fields are
 * not checked.
 */
export function invalidFields(input: { name?: unknown; email?: unknown; age?: unknown }): string[] {
  const bad: string[] = [];
  const { name, email, age } = input;
  if (name !== undefined && (typeof name !== 'string' || name.includes('\0') || !charsWithin(name, NAME_MIN, NAME_MAX))) {
    bad.push('name');
  }
  if (email !== undefined && (typeof email !== 'string' || email.includes('\0') || !charsWithin(email, EMAIL_MIN, EMAIL_MAX))) {
    bad.push('email');
  }
  if (age !== undefined && (!Number.isInteger(age) || (age as number) < AGE_MIN || (age as number) > AGE_MAX)) bad.push('age');
  return bad;
}
