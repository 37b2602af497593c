/**
 * What @tus/server answers, in the catalogue: its refusals come back as a status and a fixed text, and each
 * becomes the catalogue error of that meaning, so the reply has the contract's `{"detail": ...}` body and the
 * status the tus protocol mandates (status.ts maps the kinds back). Like `fromFastify` in the error handler.
 */
import { errors, type AppError } from '../../platform/errors.ts';

export function fromTus(status: number, body: string, o: { maxBytes: number; interrupted: boolean }): AppError {
  switch (status) {
    case 404: return errors.uploadNotFound();
    case 409: return errors.uploadOffsetConflict();
    case 410: return errors.uploadExpired();
    case 412: return errors.tusVersionUnsupported();
    case 413:
      return errors.uploadTooLarge(/maximum/i.test(body)
        ? `Upload-Length exceeds the maximum upload size of ${o.maxBytes} bytes`
        : 'The body is longer than the rest of the upload');
    case 460: return errors.checksumMismatch();
  }
  // A client that went away mid-body (the usual start of a resume) is not a server fault.
  if (o.interrupted) return errors.uploadRefused('Upload request interrupted; resume from the offset HEAD gives');
  if (status >= 500 && status !== 501) return errors.internal(new Error(`tus server: ${status} ${body.trim()}`));
  // 400, 403 (tus's answer to a missing Upload-Offset or Content-Type) and 501 (an extension we do not offer).
  return errors.uploadRefused(body.trim() || 'Bad Request');
}
