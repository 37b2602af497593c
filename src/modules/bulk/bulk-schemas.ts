/** Schemas of the bulk routes (CONTRACT.md, "Bulk import and export"). */
import { Type } from 'typebox';
import { JobPublic } from '../jobs/job-schemas.ts';
import { EXPORT_FORMATS, type ExportFormat } from './signed-url.ts';
import type { ImportMode } from './import-job.ts';
import type { ImportFormat } from './records.ts';

export const ImportQuery = Type.Object({
  format: Type.Optional(Type.Unsafe<ImportFormat>({
    type: 'string', enum: ['csv', 'ndjson'],
    description: 'Default: from the Content-Type (application/x-ndjson is ndjson), else csv',
  })),
  mode: Type.Unsafe<ImportMode>({
    type: 'string', enum: ['all_or_nothing', 'skip_invalid'], default: 'all_or_nothing',
    description: 'all_or_nothing: one invalid row and nothing is written. skip_invalid: valid rows are written, invalid ones reported.',
  }),
});

/** The JSON form of the body; a CSV or NDJSON body is taken as it is (documented beside it). */
export const UploadRef = Type.Object({ upload_id: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })) }, { title: 'ImportFromUpload' });

export const importBodyDocumented = Type.Union([
  Type.String({
    title: 'ImportFile',
    description: 'The file itself, streamed: text/csv with the header name,email,age (other columns are ignored), or '
      + 'application/x-ndjson, one {"name", "email", "age"} object per line.',
    examples: ['name,email,age\r\nAda Lovelace,ada@example.com,36\r\n'],
  }),
  Type.Object({ upload_id: Type.String({ minLength: 1, maxLength: 200, description: 'A finished upload of yours' }) }, { title: 'ImportFromUpload' }),
]);

export const ExportBody = Type.Object({
  format: Type.Unsafe<ExportFormat>({ type: 'string', enum: EXPORT_FORMATS, default: 'csv' }),
}, { title: 'ExportRequest' });

export const JobAccepted = Type.Object({ job: JobPublic }, { title: 'JobAccepted' });

export const ExportParams = Type.Object({ file: Type.String({ description: 'The file name in the download URL' }) });
export const ExportQuery = Type.Object({ signature: Type.Optional(Type.String({ maxLength: 200 })) });
