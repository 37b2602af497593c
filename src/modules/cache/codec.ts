/**
 * How the users cache writes users and list pages into Redis (JSON; timestamps as ISO text, revived as Dates) and
 * how it counts their bytes against the in-process layer's bound.
 */
import type { Page, User } from '../../db/users-store.ts';

/** A rough count of the bytes of one cached user beyond its strings. */
const USER_OVERHEAD_BYTES = 200;
/**
 * The JSON body and ETag GET /users/{id} keeps beside a cached user while it lives (src/modules/users/routes.ts):
 * its name and email once more (one byte a character) and about this much for the rest.
 */
const BODY_BYTES = 250;

export const userBytes = (u: User): number => 3 * (u.name.length + u.email.length) + USER_OVERHEAD_BYTES + BODY_BYTES;
export const bytesOfPage = (page: Page): number => page.items.reduce((n, u) => n + userBytes(u), 0);

const revive = (o: Record<string, unknown>): User =>
  ({ ...(o as unknown as User), created_at: new Date(o.created_at as string), updated_at: new Date(o.updated_at as string) });

export const encodeUser = (u: User): string => JSON.stringify(u);
export const decodeUser = (text: string): User => revive(JSON.parse(text) as Record<string, unknown>);
export const encodePage = (page: Page): string => JSON.stringify(page);

export function decodePage(text: string): Page {
  const o = JSON.parse(text) as { items: Record<string, unknown>[]; nextCursor: string | null };
  return { items: o.items.map(revive), nextCursor: o.nextCursor };
}
