/** Turning what a page is given (`/ws/dashboard`, `ws://host/ws/map`) into a WebSocket URL. */

import type { StreamPosition, Topic } from './frames';

/** The default endpoint: every topic, nothing subscribed until asked. */
export const DEFAULT_ENDPOINT = '/ws/connect';

export interface PageLocation {
  protocol: string;
  host: string;
  search?: string;
}

/**
 * Resolves `endpoint` against the page: a `ws://`/`wss://` URL is kept, an
 * `http(s)://` URL gets the matching WebSocket scheme, and a path is put on
 * the page's host with `wss:` under `https:` and `ws:` otherwise.
 */
export function resolveEndpoint(endpoint: string, location: PageLocation): string {
  const trimmed = endpoint.trim();
  if (/^wss?:\/\//i.test(trimmed)) return trimmed;
  if (/^https?:\/\//i.test(trimmed)) return trimmed.replace(/^http/i, 'ws');
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const path = trimmed.startsWith('/') ? trimmed : `/${trimmed}`;
  return `${scheme}//${location.host}${path}`;
}

/** The endpoint a page asks for with `?endpoint=`, else `/ws/connect`, resolved. */
export function endpointFromPage(location: PageLocation): string {
  const asked = new URLSearchParams(location.search ?? '').get('endpoint');
  return resolveEndpoint(asked && asked.trim() !== '' ? asked : DEFAULT_ENDPOINT, location);
}

/** Resolves against `window.location` when there is one (a path stays as given otherwise). */
export function resolveInBrowser(endpoint: string): string {
  const loc = typeof window === 'undefined' ? undefined : window.location;
  if (!loc || /^wss?:\/\//i.test(endpoint)) return endpoint;
  return resolveEndpoint(endpoint, loc);
}

/**
 * `url` with one `since=TOPIC:EPOCH:OFFSET` query parameter per position: the
 * bridge resumes those topics at connect, in order and without duplicates,
 * before any live event on them. Colons are kept readable; the rest is escaped.
 */
export function withSince(url: string, positions: readonly (readonly [Topic, StreamPosition])[]): string {
  if (positions.length === 0) return url;
  const params = positions.map(
    ([topic, p]) => `since=${encodeURIComponent(`${topic}:${p.epoch}:${p.offset}`).replace(/%3A/gi, ':')}`,
  );
  return `${url}${url.includes('?') ? '&' : '?'}${params.join('&')}`;
}
