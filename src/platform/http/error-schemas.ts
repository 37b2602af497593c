/**
 * Response schemas shared by every route: the contract's error shapes, declared once so that each route can
 * list the errors it may answer with and the OpenAPI document shows them.
 */
import { Type } from 'typebox';

export const ErrorBody = Type.Object({ detail: Type.String() }, { title: 'Error' });

export const ValidationErrorBody = Type.Object(
  {
    detail: Type.Array(
      Type.Object({
        loc: Type.Array(Type.Union([Type.String(), Type.Integer()])),
        msg: Type.String(),
        type: Type.String(),
      }),
    ),
  },
  { title: 'ValidationError' },
);

const described = {
  400: 'Bad request (invalid id, cursor or header)',
  401: 'Not authenticated',
  403: 'Forbidden',
  404: 'Not found',
  409: 'Conflict (for a create: its Idempotency-Key is still in progress; see Retry-After)',
  410: 'Gone: it existed and has expired',
  412: 'Precondition Failed: If-Match does not name the current ETag; nothing was changed',
  413: 'Request body too large',
  429: 'Too many requests',
  503: 'Service temporarily unavailable (database down or pool exhausted); see Retry-After',
  504: 'Gateway Timeout: the request deadline expired and its database work was cancelled',
} as const;

/** The error responses of a route: 422 plus whichever of the listed statuses apply. */
export function errorResponses(...statuses: (keyof typeof described)[]) {
  const out: Record<number, unknown> = { 422: { ...ValidationErrorBody, description: 'Validation error' } };
  for (const s of statuses) out[s] = { ...ErrorBody, description: described[s] };
  return out;
}

/** Errors any database-backed route may answer with. */
export const DB_ERRORS = [503, 504] as const;
