/**
 * Server-side request forgery: webhook URLs come from admins, and the service must not become a way to reach
 * what only it can reach (the loopback interface, the private network, the cloud metadata address). A
 * destination is refused when ANY address its host resolves to is private, loopback, link-local or otherwise not
 * public, and the check is made on the very addresses the connection then uses (the request's own `lookup`), so
 * a host cannot resolve to a public address for the check and a private one for the connection. Address literals
 * are checked before the request (Node does not look them up). WEBHOOK_ALLOWED_HOSTS names the exceptions.
 */
import { lookup as dnsLookup } from 'node:dns';
import { BlockList, isIP, type LookupFunction } from 'node:net';
import type { AllowedHost } from '../../platform/config.ts';

/** Not public: RFC 6890 special-purpose ranges that a webhook has no business reaching. */
const NOT_PUBLIC = new BlockList();
for (const [net, bits] of [
  ['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['169.254.0.0', 16], ['172.16.0.0', 12],
  ['192.0.0.0', 24], ['192.0.2.0', 24], ['192.88.99.0', 24], ['192.168.0.0', 16], ['198.18.0.0', 15],
  ['198.51.100.0', 24], ['203.0.113.0', 24], ['224.0.0.0', 4], ['240.0.0.0', 4],
] as const) NOT_PUBLIC.addSubnet(net, bits, 'ipv4');
for (const [net, bits] of [
  // IPv4-mapped addresses (::ffff:a.b.c.d) are checked against the IPv4 ranges by BlockList itself.
  ['::', 128], ['::1', 128], ['64:ff9b::', 96], ['64:ff9b:1::', 48], ['100::', 64], ['2001::', 23], ['2001:db8::', 32],
  ['2002::', 16], ['fc00::', 7], ['fe80::', 10], ['fec0::', 10], ['ff00::', 8],
] as const) NOT_PUBLIC.addSubnet(net, bits, 'ipv6');

/** True for an address a webhook may not reach (anything that is not a well-formed public address). */
export function isPrivateAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 0) return true;
  return NOT_PUBLIC.check(address, family === 6 ? 'ipv6' : 'ipv4');
}

/** The host of a URL as the allow-list names it: lower case, an IPv6 address without its brackets. */
export const hostOf = (url: URL) => url.hostname.toLowerCase().replace(/^\[(.*)\]$/, '$1');
export const portOf = (url: URL) => Number(url.port || (url.protocol === 'https:' ? 443 : 80));

/** Whether WEBHOOK_ALLOWED_HOSTS lets this URL's host (and port) through whatever it resolves to. */
export function isAllowed(allowed: readonly AllowedHost[], url: URL): boolean {
  const host = hostOf(url);
  const port = portOf(url);
  return allowed.some((a) => a.host === host && (a.port === undefined || a.port === port));
}

/** A destination refused as private; `code` tells it from network errors. */
export class RefusedDestination extends Error {
  readonly code = 'ERR_WEBHOOK_DESTINATION_REFUSED';
  constructor(host: string, address: string) {
    super(`refused: ${host === address ? address : `${host} resolves to ${address}, which`} is a private, loopback or link-local address (not in WEBHOOK_ALLOWED_HOSTS)`);
  }
}

/** Why this URL may not be requested before any lookup (a private address literal), or undefined. */
export function refusedLiteral(allowed: readonly AllowedHost[], url: URL): RefusedDestination | undefined {
  const host = hostOf(url);
  if (isIP(host) === 0 || isAllowed(allowed, url) || !isPrivateAddress(host)) return undefined;
  return new RefusedDestination(host, host);
}

/** `lookup` for http.request: resolves every address, refuses the host if any is private, else connects to them. */
export const guardedLookup: LookupFunction = (hostname, options, callback) => {
  dnsLookup(hostname, { all: true, family: options.family, hints: options.hints }, (err, addresses) => {
    if (err) return callback(err, '', 0);
    const bad = addresses.find((a) => isPrivateAddress(a.address));
    if (bad || addresses.length === 0) return callback(new RefusedDestination(hostname, bad?.address ?? 'no address'), '', 0);
    if (options.all) return callback(null, addresses);
    callback(null, addresses[0]!.address, addresses[0]!.family);
  });
};
