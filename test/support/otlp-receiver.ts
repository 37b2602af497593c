/**
 * A real OTLP/HTTP trace receiver for the tracing tests: accepts `POST /v1/traces` with the JSON encoding, as a
 * collector does, and keeps every span it was sent, flattened.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/** One span as the OTLP JSON encoding carries it (ids in hex), with its attributes flattened. */
export interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  attributes: Record<string, unknown>;
  service: unknown;
}

/** OTLP's SpanKind numbers. */
export const KIND = { internal: 1, server: 2, client: 3, producer: 4, consumer: 5 } as const;

type AnyValue = { stringValue?: string; intValue?: string | number; boolValue?: boolean; doubleValue?: number };
const valueOf = (v: AnyValue) => v.stringValue ?? v.intValue ?? v.boolValue ?? v.doubleValue;
const flat = (attrs: { key: string; value: AnyValue }[] = []) => Object.fromEntries(attrs.map((a) => [a.key, valueOf(a.value)]));

export interface Receiver { url: string; spans: OtlpSpan[]; requests: { path: string; contentType: string | undefined }[]; server: Server }

/** A real OTLP/HTTP trace receiver: accepts POST /v1/traces with the JSON encoding, as a collector does. */
export async function startReceiver(): Promise<Receiver> {
  const spans: OtlpSpan[] = [];
  const requests: Receiver['requests'] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      requests.push({ path: req.url ?? '', contentType: req.headers['content-type'] });
      if (req.method !== 'POST' || req.url !== '/v1/traces') { res.writeHead(404).end(); return; }
      const doc = JSON.parse(body) as {
        resourceSpans: { resource: { attributes: { key: string; value: AnyValue }[] }; scopeSpans: { spans: (Omit<OtlpSpan, 'attributes' | 'service'> & { attributes: { key: string; value: AnyValue }[] })[] }[] }[];
      };
      for (const rs of doc.resourceSpans) {
        const service = flat(rs.resource.attributes)['service.name'];
        for (const ss of rs.scopeSpans) for (const s of ss.spans) spans.push({ ...s, attributes: flat(s.attributes), service });
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, spans, requests, server };
}

/** The chain of ancestors of `span` within `spans`, nearest first. */
export function ancestors(span: OtlpSpan, spans: OtlpSpan[]): OtlpSpan[] {
  const byId = new Map(spans.map((s) => [s.spanId, s]));
  const out: OtlpSpan[] = [];
  for (let p = span.parentSpanId && byId.get(span.parentSpanId); p; p = p.parentSpanId && byId.get(p.parentSpanId)) out.push(p);
  return out;
}

