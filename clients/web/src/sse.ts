/**
 * The Server-Sent Events fallback: an `EventSource` on the bridge's `GET /sse`
 * made to look like the `WebSocketLike` the `RealtimeClient` drives, so the
 * client's positions, gap handling, auth and listeners stay one code path.
 *
 * What the adapter promises:
 * - The stream's URL carries what a WebSocket would be sent: `topics=` (the
 *   client's wanted topics and the endpoint's own), `since=` (the client's
 *   positions), `token=` (an `EventSource` cannot set headers) and `bbox=`.
 * - Client messages become URL changes: `subscribe`/`unsubscribe`/`viewport`
 *   re-open the stream (once per turn of the event loop, however many came)
 *   with `since=` at the positions of the events received so far (the
 *   stream's last event id: every topic's `TOPIC:EPOCH:OFFSET`), so nothing is
 *   replayed twice and nothing is missed. The old stream is closed before the
 *   new one is opened (both would count against the bridge's per-user cap).
 *   `unsubscribe` is answered with an `unsubscribed` frame made here; `auth`
 *   only records the token; `refresh` re-opens with the new token.
 * - `ping` is answered with a `pong` only while the stream shows it is alive:
 *   the bridge sends a `ping` event every ping interval (its welcome's
 *   `ping_interval`), so a stream heard from (a ping or any frame) within
 *   {@link SILENCE_FACTOR} intervals is; otherwise the `pong` waits for the next
 *   sign of life, and a stream that died silently (NAT timeout, sleep) gets none:
 *   the client's pong timeout reconnects it, as it does a WebSocket.
 * - A topic the bridge refused (the token may not read it: missing from the
 *   stream's `welcome`, and told by the bridge's `forbidden` error frame) is
 *   dropped from `topics=`: later reopens leave it out until the client
 *   subscribes to it again (not the client's own re-subscribe while that
 *   welcome is delivered) or the token is refreshed. When the token allows
 *   none of the topics, the bridge refuses the stream (HTTP 403), which an
 *   `EventSource` cannot tell from a lost stream.
 * - With no topic to stream, no `EventSource` is open: the adapter opens and
 *   says `welcome` itself (so a client with a token goes on to subscribe), and
 *   answers `ping` itself (nothing can die).
 * - The bridge's final `error` frame (`close_code`) is delivered, then the
 *   adapter closes with that code, as a WebSocket would. A stream that fails
 *   (before or after it opened) closes with 1006; the adapter never lets the
 *   `EventSource` reconnect by itself: the client reconnects with its backoff.
 */

import type { WebSocketLike } from './client';
import { TOPICS, type BoundingBox, type StreamPosition, type Topic } from './frames';

/** The part of the browser `EventSource` the adapter uses. */
export interface EventSourceLike {
  readonly readyState: number;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown; lastEventId?: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  /** The bridge's keepalive arrives as a `ping` event (without it, only frames are signs of life). */
  addEventListener?(type: 'ping', listener: (event: unknown) => void): void;
  close(): void;
}

export type EventSourceFactory = (url: string) => EventSourceLike;

/** What a stream is opened with besides its URL. */
export interface SseOptions {
  /** Topics to stream (the endpoint's own are added from the URL's path). */
  topics: readonly Topic[];
  /** Bearer token, sent as `?token=` (an `EventSource` cannot set headers). */
  token: string | null;
  /** The map_updates viewport (null: whole world). */
  bbox: BoundingBox | null;
  factory?: EventSourceFactory;
  /** Runs a callback soon (after the current call); default `setTimeout(..., 0)`. */
  defer?: (callback: () => void) => void;
  /** The clock, in milliseconds, of the liveness check; default `Date.now`. */
  now?: () => number;
}

/** A stream counts as alive while heard from within this many of the bridge's ping intervals. */
export const SILENCE_FACTOR = 1.5;
/** The bridge's ping interval until its welcome says (the bridge's default, `PING_INTERVAL`). */
const DEFAULT_BRIDGE_PING_MS = 20_000;

/** The topics each WebSocket endpoint subscribes on its own (bridge/app.py ENDPOINTS). */
export const ENDPOINT_TOPICS: Readonly<Record<string, readonly Topic[]>> = {
  '/ws/connect': [],
  '/ws/packages': ['package_updates'],
  '/ws/dashboard': ['dashboard_metrics', 'notifications'],
  '/ws/map': ['map_updates', 'package_updates'],
  '/ws/agents': ['agent_activity', 'system_health'],
};

const CONNECTING = 0;
const OPEN = 1;
const CLOSED = 3;
/** Close code of a stream that failed or was lost (as a WebSocket's abnormal closure). */
export const SSE_LOST = 1006;

/** The SSE endpoint beside a WebSocket endpoint URL: `ws://h/ws/map?x` -> `http://h/sse`. */
export function sseUrl(wsUrl: string): string {
  const url = new URL(wsUrl);
  url.protocol = url.protocol === 'wss:' ? 'https:' : url.protocol === 'ws:' ? 'http:' : url.protocol;
  url.pathname = '/sse';
  url.search = '';
  url.hash = '';
  return url.toString();
}

/** `TOPIC:EPOCH:OFFSET` entries (a `since=` value, or a comma-joined event id) by topic. */
export function parsePositions(values: readonly string[]): Map<Topic, StreamPosition> {
  const positions = new Map<Topic, StreamPosition>();
  for (const value of values) {
    for (const entry of value.split(',')) {
      const [topic, epoch, offset, extra] = entry.split(':');
      if (extra !== undefined || !topic || epoch === undefined || !/^\d+$/.test(offset ?? '')) continue;
      if ((TOPICS as readonly string[]).includes(topic)) positions.set(topic as Topic, { epoch, offset: Number(offset) });
    }
  }
  return positions;
}

/** The URL of a stream of `topics` resumed after `positions`. */
export function streamUrl(
  base: string,
  topics: readonly Topic[],
  positions: ReadonlyMap<Topic, StreamPosition>,
  token: string | null,
  bbox: BoundingBox | null,
): string {
  const params = [`topics=${topics.join(',')}`];
  for (const topic of topics) {
    const p = positions.get(topic);
    if (p) params.push(`since=${encodeURIComponent(`${topic}:${p.epoch}:${p.offset}`).replace(/%3A/gi, ':')}`);
  }
  if (bbox && topics.includes('map_updates')) params.push(`bbox=${[bbox.west, bbox.south, bbox.east, bbox.north].join(',')}`);
  if (token) params.push(`token=${encodeURIComponent(token)}`);
  return `${base}?${params.join('&')}`;
}

const defaultFactory: EventSourceFactory = (url) => new EventSource(url) as unknown as EventSourceLike;
const defaultDefer = (callback: () => void): void => {
  globalThis.setTimeout(callback, 0);
};

/** An SSE stream that the `RealtimeClient` drives as if it were a WebSocket. */
export class SseSocket implements WebSocketLike {
  readyState = CONNECTING;
  onopen: ((event: unknown) => void) | null = null;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: ((event: { code: number; reason: string }) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;

  private readonly base: string;
  private readonly factory: EventSourceFactory;
  private readonly defer: (callback: () => void) => void;
  private readonly now: () => number;
  private readonly topics: Topic[];
  /** Topics the bridge refused with the current token (left out of `topics=`). */
  private readonly refused = new Set<Topic>();
  /** The topics of the open stream's URL. */
  private streamTopics: readonly Topic[] = [];
  /** Topics refused by the welcome being delivered (see `send`'s subscribe). */
  private refusing: ReadonlySet<Topic> | null = null;
  /** When the stream last showed it is alive, and the bridge's ping interval. */
  private heardAt: number;
  private bridgePingMs = DEFAULT_BRIDGE_PING_MS;
  /** A `ping` waits for the stream's next sign of life. */
  private pongOwed = false;
  private readonly positions: Map<Topic, StreamPosition>;
  private token: string | null;
  private bbox: BoundingBox | null;
  private source: EventSourceLike | null = null;
  private reopenQueued = false;
  /** The URLs of every stream opened, for diagnostics and tests. */
  readonly opened: string[] = [];

  /** `wsUrl`: the WebSocket URL the client would have used (its path and `since=`). */
  constructor(wsUrl: string, options: SseOptions) {
    const url = new URL(wsUrl);
    this.base = sseUrl(wsUrl);
    this.factory = options.factory ?? defaultFactory;
    this.defer = options.defer ?? defaultDefer;
    this.now = options.now ?? (() => Date.now());
    this.heardAt = this.now();
    this.token = options.token;
    this.bbox = options.bbox;
    const own = ENDPOINT_TOPICS[url.pathname] ?? [];
    this.topics = TOPICS.filter((t) => own.includes(t) || options.topics.includes(t));
    this.positions = parsePositions(url.searchParams.getAll('since'));
    this.open();
  }

  send(data: string): void {
    if (this.readyState !== OPEN) throw new Error('the SSE stream is not open');
    const message = JSON.parse(data) as { type: string; data: Record<string, unknown> };
    const topic = message.data['subscription_type'] as Topic | undefined;
    switch (message.type) {
      case 'auth':
        this.token = String(message.data['token']);
        return;
      case 'refresh':
        this.token = String(message.data['token']);
        // The new token may allow what the old one did not: ask again.
        for (const t of this.refused) if (!this.topics.includes(t)) this.topics.push(t);
        this.topics.sort((a, b) => TOPICS.indexOf(a) - TOPICS.indexOf(b));
        this.refused.clear();
        this.queueReopen();
        return;
      case 'ping':
        if (this.source === null || this.now() - this.heardAt <= SILENCE_FACTOR * this.bridgePingMs) {
          this.emitLater({ type: 'pong', data: {} });
        } else {
          this.pongOwed = true;
        }
        return;
      case 'subscribe': {
        if (!topic || this.topics.includes(topic)) return;
        // The client's own re-subscribe after a welcome that refused it: the bridge's
        // error frame answers it. Any other subscribe asks the bridge again.
        if (this.refusing?.has(topic)) return;
        this.refused.delete(topic);
        const since = message.data['since'] as StreamPosition | undefined;
        if (since && !this.positions.has(topic)) this.positions.set(topic, since);
        if (message.data['bbox']) this.bbox = message.data['bbox'] as BoundingBox;
        this.topics.splice(0, this.topics.length, ...TOPICS.filter((t) => t === topic || this.topics.includes(t)));
        this.queueReopen();
        return;
      }
      case 'unsubscribe':
        if (topic) this.refused.delete(topic);
        if (!topic || !this.topics.includes(topic)) return;
        this.topics.splice(this.topics.indexOf(topic), 1);
        this.positions.delete(topic);
        this.emitLater({ type: 'unsubscribed', data: { subscription_type: topic, subscriptions: [...this.topics] } });
        this.queueReopen();
        return;
      case 'viewport':
        this.bbox = (message.data['bbox'] as BoundingBox | null) ?? null;
        if (this.topics.includes('map_updates')) this.queueReopen();
        return;
      default:
        return;
    }
  }

  close(code = 1000, reason = ''): void {
    if (this.readyState === CLOSED) return;
    this.shut();
    this.defer(() => this.onclose?.({ code, reason }));
  }

  /** The stream's topics now. */
  get streaming(): readonly Topic[] {
    return [...this.topics];
  }

  private open(): void {
    if (this.topics.length === 0) {
      // Nothing to stream: open idle, and welcome the client ourselves.
      this.defer(() => {
        if (this.readyState !== CONNECTING) return;
        this.readyState = OPEN;
        this.onopen?.({});
        this.emit({
          type: 'welcome',
          data: { connection_id: '', endpoint: '/sse', subscriptions: [], subscription_types: [...TOPICS] },
        });
      });
      return;
    }
    const url = streamUrl(this.base, this.topics, this.positions, this.token, this.bbox);
    this.opened.push(url);
    this.streamTopics = [...this.topics];
    let source: EventSourceLike;
    try {
      source = this.factory(url);
    } catch (error) {
      this.fail(`cannot open the SSE stream: ${error instanceof Error ? error.message : String(error)}`);
      return;
    }
    this.source = source;
    source.onopen = () => {
      if (this.source !== source || this.readyState !== CONNECTING) return;
      this.readyState = OPEN;
      this.onopen?.({});
    };
    source.onmessage = (event) => {
      if (this.source === source) this.receive(event.data, event.lastEventId);
    };
    source.addEventListener?.('ping', () => {
      if (this.source === source) this.heard();
    });
    source.onerror = () => {
      // Never let the EventSource retry on its own: the client reconnects, with its backoff.
      if (this.source === source) this.fail(this.readyState === OPEN ? 'SSE stream lost' : 'SSE stream could not be opened');
    };
  }

  private receive(data: unknown, lastEventId: string | undefined): void {
    if (lastEventId) for (const [topic, p] of parsePositions([lastEventId])) this.positions.set(topic, p);
    if (typeof data === 'string' && data.startsWith('{"type":"welcome"')) {
      this.refusing = this.welcomed(data);
      try {
        this.onmessage?.({ data });
      } finally {
        this.refusing = null;
      }
    } else {
      this.onmessage?.({ data });
    }
    this.heard();
    if (typeof data === 'string' && data.startsWith('{"type":"error"')) {
      const closeCode = finalCloseCode(data);
      if (closeCode !== null && this.readyState === OPEN) {
        this.shut();
        this.onclose?.({ code: closeCode, reason: finalMessage(data) });
      }
    }
  }

  /** The stream is alive: pay a `pong` owed. */
  private heard(): void {
    this.heardAt = this.now();
    if (this.pongOwed && this.readyState === OPEN) {
      this.pongOwed = false;
      this.emit({ type: 'pong', data: {} });
    }
  }

  /**
   * Takes in the stream's welcome (`data`): the bridge's ping interval, and the
   * topics of the stream's URL it left out (refused: dropped from `topics=`).
   */
  private welcomed(data: string): ReadonlySet<Topic> {
    let welcome: { data?: { subscriptions?: unknown; ping_interval?: unknown } };
    try {
      welcome = JSON.parse(data) as typeof welcome;
    } catch {
      return new Set();
    }
    const interval = Number(welcome.data?.ping_interval);
    if (interval > 0) this.bridgePingMs = interval * 1000;
    const subscriptions = welcome.data?.subscriptions;
    if (!Array.isArray(subscriptions)) return new Set();
    const refused = new Set(this.streamTopics.filter((t) => !subscriptions.includes(t)));
    for (const topic of refused) {
      this.refused.add(topic);
      this.positions.delete(topic);
      if (this.topics.includes(topic)) this.topics.splice(this.topics.indexOf(topic), 1);
    }
    return refused;
  }

  private queueReopen(): void {
    if (this.reopenQueued) return;
    this.reopenQueued = true;
    this.defer(() => {
      this.reopenQueued = false;
      if (this.readyState !== OPEN) return;
      this.detach();
      if (this.topics.length > 0) {
        this.readyState = CONNECTING;
        this.open();
        // Already open as far as the client knows: the new stream's welcome follows.
        this.readyState = this.readyState === CLOSED ? CLOSED : OPEN;
      }
    });
  }

  private fail(reason: string): void {
    if (this.readyState === CLOSED) return;
    this.shut();
    this.onerror?.({});
    this.onclose?.({ code: SSE_LOST, reason });
  }

  private shut(): void {
    this.readyState = CLOSED;
    this.detach();
  }

  private detach(): void {
    const source = this.source;
    this.source = null;
    if (source) {
      source.onopen = source.onmessage = source.onerror = null;
      source.close();
    }
  }

  private emit(frame: { type: string; data: unknown }): void {
    this.onmessage?.({ data: JSON.stringify({ ...frame, timestamp: new Date().toISOString() }) });
  }

  private emitLater(frame: { type: string; data: unknown }): void {
    this.defer(() => {
      if (this.readyState === OPEN) this.emit(frame);
    });
  }
}

function finalCloseCode(data: string): number | null {
  try {
    const code = (JSON.parse(data) as { data?: { close_code?: unknown } }).data?.close_code;
    return typeof code === 'number' ? code : null;
  } catch {
    return null;
  }
}

function finalMessage(data: string): string {
  try {
    const message = (JSON.parse(data) as { data?: { message?: unknown } }).data?.message;
    return typeof message === 'string' ? message.slice(0, 120) : '';
  } catch {
    return '';
  }
}
