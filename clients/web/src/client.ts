/**
 * `RealtimeClient`: one WebSocket connection to a ClearPath Realtime bridge
 * endpoint, kept alive and resumed.
 *
 * Framework-free. What it promises:
 * - States move idle -> connecting -> connected, and on a lost connection
 *   -> reconnecting (attempt 1..maxReconnectAttempts, exponential backoff with
 *   jitter) -> connected again, or -> failed once every attempt is spent.
 *   `close()` ends it in `closed`; `connect()` starts it again from `failed`
 *   or `closed`.
 * - A ping goes out every ping interval; a pong that does not come back
 *   within `pongTimeoutMs` counts the connection dead.
 * - Each topic's state lives in one `TopicState`: wanted or not, confirmed
 *   by the bridge or not, and its `Cursor` (see `positions.ts`).
 * - Every socket is opened with `?since=TOPIC:EPOCH:OFFSET` for each wanted
 *   topic with a known position: the bridge replays what was missed on it in
 *   order, then live events. Wanted topics without a position are subscribed
 *   once the socket is open. The cursor drops any event already delivered, so
 *   nothing is shown twice.
 * - A `subscribed` frame with `recovered: false` (a resume that could not be
 *   served, or the bridge's unsolicited notice that the topic's history was
 *   lost) moves the cursor to where the stream continues and is reported to
 *   gap listeners (`onGap`), besides being delivered as a frame.
 * - With a `token`, the first message on every socket is `auth`; subscribe
 *   messages wait for the bridge's `welcome` (which may come before or after
 *   the `auth` is processed). With a token function, the token is refreshed in
 *   place (`refresh` -> `refreshed`) ahead of its expiry, and every connection
 *   asks the function for a fresh one. Close 4001 (unauthorized) ends in
 *   `failed` with a static token or none; 4003 (expired) likewise with a
 *   static token (it cannot get better); otherwise 4001/4003/4008 reconnect
 *   with backoff. Tokens are never put in URLs, errors or logs.
 * - A viewport (`setViewport`) limits map_updates to a bounding box; it is
 *   moved in place with a `viewport` message and kept across reconnects, where
 *   a WebSocket's URL carries it (`?bbox=W,S,E,N`) beside map_updates' `?since=`,
 *   so the resume and the endpoint's own subscription are filtered from the start.
 * - A `position` frame (the bridge's filters left events of a topic out) moves
 *   that topic's position forward (same epoch only), so the next resume starts
 *   there; it is not dispatched to listeners.
 * - Transport (`transport`, default `auto`): a WebSocket; when one cannot be
 *   opened (error or close before `open`) twice in a row, the next attempt uses
 *   the bridge's Server-Sent Events stream (`GET /sse`, see `sse.ts`) instead,
 *   and stays on it while it opens; after `sseRetryWebSocketMs` (5 minutes) on
 *   SSE the next reconnect tries a WebSocket again. An SSE attempt that cannot
 *   be opened either sends the next attempts back to WebSockets. `status.transport`
 *   says which is in use; a runtime without `EventSource` (and no
 *   `eventSourceFactory`) never falls back. Over SSE the token travels as `?token=` (an
 *   `EventSource` cannot set headers), and a refused token cannot be told from
 *   a lost stream (both close 1006 and are retried with backoff).
 * - Nothing the server sends throws into the app: error frames, and client-made
 *   `client_*` error frames for unreadable input, go to frame listeners like
 *   any other frame. A listener that throws is reported to `onListenerError`.
 *
 * Time, randomness and the WebSocket are injectable for tests.
 */

import {
  CLOSE_AUTH_TIMEOUT,
  CLOSE_TOKEN_EXPIRED,
  CLOSE_UNAUTHORIZED,
  authCloseLabel,
  jwtExpiry,
  refreshDelayMs,
  type TokenSource,
} from './auth';
import { backoffDelay, resolveBackoff, type BackoffOptions, type ResolvedBackoff } from './backoff';
import { withSince } from './endpoint';
import {
  TOPICS,
  clientError,
  decodeMessage,
  isEventFrame,
  isTopic,
  type AnyEventFrame,
  type BoundingBox,
  type ClientMessage,
  type FrameOf,
  type FrameType,
  type ServerFrame,
  type StreamPosition,
  type SubscribeMessage,
  type Topic,
} from './frames';
import { Cursor, type Gap } from './positions';
import { SseSocket, type EventSourceFactory } from './sse';

export type { BoundingBox } from './frames';

export type ConnectionState = 'idle' | 'connecting' | 'connected' | 'reconnecting' | 'failed' | 'closed';

/** A snapshot of the connection, for display. */
export interface ConnectionStatus {
  state: ConnectionState;
  url: string;
  /** The reconnection attempt under way or waited for (1-based); 0 when not reconnecting. */
  attempt: number;
  maxAttempts: number;
  /** When state is `reconnecting` and the next attempt is being waited for: the delay chosen, in ms. */
  retryDelayMs: number | null;
  /** The bridge's id for the current connection, from its `welcome` frame. */
  connectionId: string | null;
  /** Why the last connection ended or failed, for people. */
  lastError: string | null;
  /** The close code of the last connection, when it was closed. */
  lastCloseCode: number | null;
  /** Who the connection's token names, from the bridge's `welcome`; null without one. */
  subject: string | null;
  /** When the connection's token expires (unix seconds), from `welcome`/`refreshed`; null: unknown or never. */
  expiresAt: number | null;
  /**
   * What carries the current (or next) connection: a WebSocket, or the SSE
   * fallback. Always set by `RealtimeClient` (optional for snapshots made elsewhere).
   */
  transport?: Transport;
}

/** What carries a connection: see the `transport` option. */
export type Transport = 'websocket' | 'sse';

/** The part of the browser `WebSocket` this client uses. */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
}

export type WebSocketFactory = (url: string) => WebSocketLike;

/** The part of the timer API this client uses. */
export interface Timers {
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export interface RealtimeClientOptions {
  /** The endpoint, e.g. `ws://localhost:8000/ws/connect`. */
  url: string;
  /** Topics to subscribe to once connected. */
  topics?: readonly Topic[];
  /**
   * Bearer token (a JWT) sent in an `auth` message, the first on each socket.
   * A function is called before every connection and every refresh; only
   * then is the token refreshed ahead of its expiry. Never logged.
   */
  token?: TokenSource;
  /** Last positions seen, per topic (e.g. kept across a page reload): resumed from. */
  positions?: Partial<Record<Topic, StreamPosition>>;
  /**
   * Reconnection attempts after a lost connection before `failed`. Default: no
   * limit (every `backoff.maxMs` at most, 15 s): a dashboard outlives a deploy or
   * a storm of reconnecting browsers instead of giving up after ~15 s.
   */
  maxReconnectAttempts?: number;
  backoff?: BackoffOptions;
  /** Milliseconds between pings. Default: the `ping_interval` of the bridge's welcome, else 25 000. */
  pingIntervalMs?: number;
  /** Milliseconds a pong may take before the connection counts as dead. Default 10 000. */
  pongTimeoutMs?: number;
  /** Milliseconds a socket may take to open. Default 10 000. */
  connectTimeoutMs?: number;
  /**
   * @deprecated No effect: the bridge now orders a resume asked for with
   * `?since=` at connect, so the client holds nothing back. Kept so that
   * existing callers compile.
   */
  resumeTimeoutMs?: number;
  /** Close codes from the server after which the client does not reconnect. Default 1003, 1009. */
  terminalCloseCodes?: readonly number[];
  /** Connect as soon as the client is made. Default false: call `connect()`. */
  autoConnect?: boolean;
  webSocketFactory?: WebSocketFactory;
  /** `auto` (default): WebSocket, falling back to SSE when it cannot be opened; or only one of them. */
  transport?: 'auto' | Transport;
  /** Milliseconds on SSE after which the next reconnect tries a WebSocket again. Default 300 000. */
  sseRetryWebSocketMs?: number;
  /** Makes the SSE fallback's `EventSource` (tests); default `new EventSource(url)`. */
  eventSourceFactory?: EventSourceFactory;
  timers?: Timers;
  /** Returns a number in [0, 1); default `Math.random`. */
  random?: () => number;
  /** Milliseconds since the epoch, for token expiry; default `Date.now`. */
  now?: () => number;
  /** Called when a listener throws. Default: `console.error`. */
  onListenerError?: (error: unknown) => void;
}

/** Counters, for diagnostics and tests. */
export interface ClientStats {
  framesReceived: number;
  eventsDelivered: number;
  duplicatesDropped: number;
  unknownFramesIgnored: number;
  reconnects: number;
  /** `subscribed` frames with `recovered: false`, reported to `onGap` listeners. */
  gaps: number;
}

type Listener<T> = (value: T) => void;

const OPEN = 1;
const NORMAL_CLOSURE = 1000;
/** WebSocket attempts in a row that must fail to open before the client tries SSE. */
const WEBSOCKET_FAILURES_BEFORE_SSE = 2;
/** Close code this client uses when it gives up on a socket (no pong, no open). */
export const CLIENT_GAVE_UP = 4000;
const DEFAULT_PING_MS = 25_000;
/** The longest delay `setTimeout` takes (about 24.8 days); longer waits are made of several. */
const MAX_TIMER_MS = 2 ** 31 - 1;

const defaultTimers: Timers = {
  // Looked up at call time, so fake timers installed after import still apply.
  setTimeout: (callback, ms) => globalThis.setTimeout(callback, ms),
  clearTimeout: (handle) => globalThis.clearTimeout(handle as ReturnType<typeof globalThis.setTimeout>),
};

const defaultFactory: WebSocketFactory = (url) => new WebSocket(url) as unknown as WebSocketLike;

/** One topic's state in a client (as a centrifuge-js `Subscription` is). */
class TopicState {
  /** The app or the endpoint has the topic: it is subscribed on every connection. */
  wanted = false;
  /** The app unsubscribed from it: undone if the endpoint subscribes it on its own. */
  optedOut = false;
  /** The endpoint subscribed the connection to it on its own (from the last `welcome`). */
  byEndpoint = false;
  /** In the subscription list the bridge last reported. */
  confirmed = false;
  /** Resumed with `?since=` in the URL of the current socket. */
  resumedAtConnect = false;
  readonly cursor: Cursor;

  constructor(
    readonly topic: Topic,
    position: StreamPosition | null = null,
  ) {
    this.cursor = new Cursor(topic, position);
  }
}

export class RealtimeClient {
  readonly url: string;
  private readonly maxAttempts: number;
  private readonly backoff: ResolvedBackoff;
  private readonly fixedPingMs: number | undefined;
  private pingMs: number;
  private readonly pongTimeoutMs: number;
  private readonly connectTimeoutMs: number;
  private readonly terminalCodes: ReadonlySet<number>;
  private readonly factory: WebSocketFactory;
  private readonly transportOption: 'auto' | Transport;
  private readonly sseRetryWebSocketMs: number;
  private readonly eventSourceFactory: EventSourceFactory | undefined;
  private readonly timers: Timers;
  private readonly random: () => number;
  private readonly now: () => number;
  private readonly tokenSource: TokenSource | undefined;
  private readonly onListenerError: (error: unknown) => void;

  private _state: ConnectionState = 'idle';
  private socket: WebSocketLike | null = null;
  private attempt = 0;
  private retryDelayMs: number | null = null;
  private connectionId: string | null = null;
  private lastError: string | null = null;
  private lastCloseCode: number | null = null;
  private heardOnSocket = false;
  private transport: Transport = 'websocket';
  /** WebSocket attempts in a row that ended before `open` (2: the next attempt is SSE). */
  private webSocketFailures = 0;
  /** When the client first opened an SSE stream since it switched to SSE (null: not yet). */
  private sseSince: number | null = null;
  /** The current socket was made, and it opened. */
  private socketMade = false;
  private socketOpened = false;
  /** Subscribe messages may go out on the socket: it is open and, with a token, the `welcome` came. */
  private ready = false;
  /** The token last sent on the current socket (`auth` or `refresh`). */
  private token: string | null = null;
  private subject: string | null = null;
  private expiresAt: number | null = null;
  /** Bumped whenever a connection starts or ends: a token arriving for an older one is dropped. */
  private generation = 0;
  /** The box of the map_updates subscription (null: whole world); kept across reconnects. */
  private _viewport: BoundingBox | null = null;
  /** The box the bridge has (or is sent) for the current socket: its URL's, then the last sent. */
  private sentViewport: BoundingBox | null = null;

  private reconnectTimer: unknown = null;
  private connectTimer: unknown = null;
  private pingTimer: unknown = null;
  private pongTimer: unknown = null;
  private refreshTimer: unknown = null;

  /** Every topic's state, in the protocol's order. */
  private readonly topics: readonly TopicState[];

  private readonly frameListeners = new Set<Listener<ServerFrame>>();
  private readonly gapListeners = new Set<Listener<Gap>>();
  private readonly typeListeners = new Map<FrameType, Set<Listener<ServerFrame>>>();
  private readonly statusListeners = new Set<Listener<ConnectionStatus>>();

  readonly stats: ClientStats = {
    framesReceived: 0,
    eventsDelivered: 0,
    duplicatesDropped: 0,
    unknownFramesIgnored: 0,
    reconnects: 0,
    gaps: 0,
  };

  constructor(options: RealtimeClientOptions) {
    this.url = options.url;
    this.maxAttempts = options.maxReconnectAttempts ?? Infinity;
    if (!(this.maxAttempts >= 0)) throw new RangeError('maxReconnectAttempts must be >= 0');
    this.backoff = resolveBackoff(options.backoff);
    this.fixedPingMs = options.pingIntervalMs;
    this.pingMs = options.pingIntervalMs ?? DEFAULT_PING_MS;
    this.pongTimeoutMs = options.pongTimeoutMs ?? 10_000;
    this.connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
    this.terminalCodes = new Set(options.terminalCloseCodes ?? [1003, 1009]);
    this.factory = options.webSocketFactory ?? defaultFactory;
    this.transportOption = options.transport ?? 'auto';
    this.transport = this.transportOption === 'sse' ? 'sse' : 'websocket';
    this.sseRetryWebSocketMs = options.sseRetryWebSocketMs ?? 300_000;
    this.eventSourceFactory = options.eventSourceFactory;
    this.timers = options.timers ?? defaultTimers;
    this.random = options.random ?? Math.random;
    this.now = options.now ?? (() => Date.now());
    this.tokenSource = options.token;
    this.onListenerError = options.onListenerError ?? ((error) => console.error('RealtimeClient listener threw', error));
    this.topics = TOPICS.map((t) => new TopicState(t, options.positions?.[t] ?? null));
    for (const topic of options.topics ?? []) this.topic(topic).wanted = true;
    if (options.autoConnect) this.connect();
  }

  // -------------------------------------------------------------------------
  // Public API
  // -------------------------------------------------------------------------

  get state(): ConnectionState {
    return this._state;
  }

  get status(): ConnectionStatus {
    return {
      state: this._state,
      url: this.url,
      attempt: this._state === 'reconnecting' ? this.attempt : 0,
      maxAttempts: this.maxAttempts,
      retryDelayMs: this._state === 'reconnecting' ? this.retryDelayMs : null,
      connectionId: this.connectionId,
      lastError: this.lastError,
      lastCloseCode: this.lastCloseCode,
      subject: this.subject,
      expiresAt: this.expiresAt,
      transport: this.transport,
    };
  }

  get isConnected(): boolean {
    return this._state === 'connected';
  }

  /** The topics this client has, in the protocol's order. */
  get subscriptions(): Topic[] {
    return this.topics.filter((s) => s.wanted).map((s) => s.topic);
  }

  /** The subscription list the bridge last confirmed. */
  get confirmedSubscriptions(): Topic[] {
    return this.topics.filter((s) => s.confirmed).map((s) => s.topic);
  }

  /** The topics the endpoint subscribes a connection to on its own, from its last `welcome`. */
  get endpointSubscriptions(): Topic[] {
    return this.topics.filter((s) => s.byEndpoint).map((s) => s.topic);
  }

  /**
   * Where `topic`'s stream stands for this client: the last event delivered,
   * or where the bridge said the stream continues. Null when unknown. This is
   * what to keep (e.g. in `sessionStorage`) and pass back as `positions`.
   */
  positionOf(topic: Topic): StreamPosition | null {
    return this.topic(topic).cursor.position;
  }

  /** Opens the connection. Does nothing while connecting, connected or reconnecting. */
  connect(): void {
    if (this._state === 'connecting' || this._state === 'connected' || this._state === 'reconnecting') return;
    this.attempt = 0;
    this.lastError = null;
    this.openSocket('connecting');
  }

  /** Closes the connection for good (code 1000); `connect()` may start it again. */
  close(reason = 'client closed'): void {
    if (this._state === 'closed') return;
    this.endConnection();
    this.clearTimer('reconnectTimer');
    const socket = this.detachSocket();
    if (socket) safeClose(socket, NORMAL_CLOSURE, reason);
    this.retryDelayMs = null;
    this.setConfirmed([]);
    this.setState('closed');
  }

  /** Subscribes to `topic` (now if connected, else on connect). Subscribing twice does nothing. */
  subscribe(topic: Topic): void {
    const s = this.topic(topic);
    s.optedOut = false;
    if (s.wanted) return;
    s.wanted = true;
    if (this.socketReady()) this.sendSubscribe(s);
    this.emitStatus();
  }

  /** Unsubscribes from `topic`, and forgets its position. */
  unsubscribe(topic: Topic): void {
    const s = this.topic(topic);
    s.optedOut = true;
    if (!s.wanted) return;
    s.wanted = false;
    s.cursor.reset();
    if (this.socketReady()) this.send({ type: 'unsubscribe', data: { subscription_type: topic } });
    this.emitStatus();
  }

  /** The box of the map_updates subscription, as normalized by `setViewport` (null: whole world). */
  get viewport(): BoundingBox | null {
    return this._viewport === null ? null : { ...this._viewport };
  }

  /**
   * Sets the box of the map_updates subscription (null: the whole world): only
   * map updates inside it are sent. When subscribed and connected, sends a
   * `viewport` message (the bridge moves the box in place: no resubscribe, no
   * gap; it answers with a `viewport` frame); otherwise the box goes with the
   * next subscribe. Kept across reconnects: a WebSocket's URL carries it
   * (`?bbox=`) with map_updates' `?since=`, so the replay and an endpoint's own
   * map_updates subscription (`/ws/map`) are filtered from the start; a box set
   * while connecting follows the `welcome` as a `viewport` message.
   *
   * Latitudes are clamped to [-90, 90]; longitudes outside [-180, 180] are
   * wrapped into it; a box 360 degrees wide or wider covers every longitude.
   * `west > east` means the box crosses the antimeridian. Throws RangeError
   * for a number that is not finite, or `south > north`.
   */
  setViewport(bbox: BoundingBox | null): void {
    const next = checkViewport(bbox);
    if (sameBox(this._viewport, next)) return;
    this._viewport = next;
    if (this.topic('map_updates').wanted && this.socketReady()) this.sendViewport();
  }

  /** Sends a message if the socket is open; returns whether it was sent. */
  send(message: ClientMessage): boolean {
    const socket = this.socket;
    if (!socket || socket.readyState !== OPEN) return false;
    try {
      socket.send(JSON.stringify(message));
      return true;
    } catch (error) {
      this.lastError = `send failed: ${describe(error)}`;
      return false;
    }
  }

  /** Calls `listener` with every frame (events, control frames, error frames). Returns the remover. */
  onFrame(listener: Listener<ServerFrame>): () => void {
    this.frameListeners.add(listener);
    return () => this.frameListeners.delete(listener);
  }

  /** Calls `listener` with every frame of `type`. Returns the remover. */
  on<T extends FrameType>(type: T, listener: Listener<FrameOf<T>>): () => void {
    let set = this.typeListeners.get(type);
    if (!set) {
      set = new Set();
      this.typeListeners.set(type, set);
    }
    const l = listener as Listener<ServerFrame>;
    set.add(l);
    return () => set.delete(l);
  }

  /**
   * Calls `listener` when events of a topic were lost: a resume the bridge
   * could not serve, or its notice that the topic's history was lost (e.g. an
   * in-memory core restarted). The events that follow come after
   * `gap.position`; what lies between is lost to this client. Returns the remover.
   */
  onGap(listener: Listener<Gap>): () => void {
    this.gapListeners.add(listener);
    return () => this.gapListeners.delete(listener);
  }

  /** Calls `listener` with the status after every change. Returns the remover. */
  onStatus(listener: Listener<ConnectionStatus>): () => void {
    this.statusListeners.add(listener);
    return () => this.statusListeners.delete(listener);
  }

  // -------------------------------------------------------------------------
  // Connection lifecycle
  // -------------------------------------------------------------------------

  private openSocket(state: 'connecting' | 'reconnecting'): void {
    this.retryDelayMs = null;
    this.setConfirmed([]);
    this.heardOnSocket = false;
    this.socketMade = false;
    this.socketOpened = false;
    this.connectionId = null;
    this.ready = false;
    this.token = null;
    this.subject = null;
    this.expiresAt = null;
    const generation = ++this.generation;
    this.setState(state);
    if (generation !== this.generation) return; // a status listener closed the client
    // Covers getting a token too: a token function that never answers counts as a failed attempt.
    this.connectTimer = this.timers.setTimeout(() => {
      this.connectTimer = null;
      this.giveUpOnSocket(`no connection within ${this.connectTimeoutMs} ms`);
    }, this.connectTimeoutMs);
    const source = this.tokenSource;
    if (typeof source !== 'function') {
      this.createSocket(source ? source : null);
      return;
    }
    let result: string | Promise<string>;
    try {
      result = source();
    } catch (error) {
      this.tokenUnavailable(error);
      return;
    }
    if (typeof result === 'string') {
      this.withToken(result, (token) => this.createSocket(token));
      return;
    }
    Promise.resolve(result).then(
      (token) => {
        if (generation === this.generation) this.withToken(token, (t) => this.createSocket(t));
      },
      (error: unknown) => {
        if (generation === this.generation) this.tokenUnavailable(error);
      },
    );
  }

  /** Calls `use` with `token` when it is a non-empty string; else the attempt failed. */
  private withToken(token: unknown, use: (token: string) => void): void {
    if (typeof token === 'string' && token !== '') use(token);
    else this.tokenUnavailable(new TypeError('the token function gave no token'));
  }

  private tokenUnavailable(error: unknown): void {
    this.lastCloseCode = null;
    this.connectionLost(`no token: ${describe(error)}`);
  }

  private createSocket(token: string | null): void {
    const resumes: [Topic, StreamPosition][] = [];
    for (const s of this.topics) {
      const position = s.wanted ? s.cursor.position : null;
      s.resumedAtConnect = position !== null;
      if (position) resumes.push([s.topic, position]);
    }
    let socket: WebSocketLike;
    this.transport = this.pickTransport();
    this.socketMade = true;
    // The box goes in the URL: map_updates (the endpoint's, or resumed by since=) is
    // filtered from the connect on, its replay too.
    const box = this._viewport;
    this.sentViewport = box;
    try {
      const resumed = withSince(this.url, resumes);
      const url = this.transport === 'websocket' ? withBbox(resumed, box) : resumed;
      socket =
        this.transport === 'sse'
          ? new SseSocket(url, {
              topics: this.subscriptions,
              token,
              bbox: this._viewport,
              factory: this.eventSourceFactory,
              defer: (run) => void this.timers.setTimeout(run, 0),
              now: this.now,
            })
          : this.factory(url);
    } catch (error) {
      this.connectionLost(`cannot open ${this.url}: ${describe(error)}`);
      return;
    }
    this.socket = socket;
    this.token = token;
    socket.onopen = () => {
      if (this.socket === socket) this.handleOpen();
    };
    socket.onmessage = (event) => {
      if (this.socket === socket) this.handleMessage(event.data);
    };
    socket.onerror = () => {
      if (this.socket === socket) this.lastError = this.transport === 'sse' ? 'SSE error' : 'WebSocket error';
    };
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.handleClose(event.code, event.reason);
    };
  }

  private handleOpen(): void {
    this.clearTimer('connectTimer');
    this.socketOpened = true;
    if (this.transport === 'websocket') this.webSocketFailures = 0;
    else this.sseSince ??= this.now();
    if (this.attempt > 0) this.stats.reconnects += 1;
    // Before anything else can be sent (a status listener might send): `auth` is the first message.
    if (this.token !== null) this.send({ type: 'auth', data: { token: this.token } });
    else this.ready = true;
    this.setState('connected');
    // With a token, subscriptions wait for the bridge's `welcome`.
    if (this.ready) this.sendSubscriptions(false);
    this.schedulePing();
  }

  private handleClose(code: number, reason: string): void {
    this.lastCloseCode = code;
    const label = authCloseLabel(code);
    const why = `closed by server (${code}${label ? ` ${label}` : ''}${reason ? `: ${reason}` : ''})`;
    if (this.terminalCodes.has(code) || this.pointlessToRetry(code)) {
      this.endConnection();
      this.setConfirmed([]);
      this.lastError = why;
      this.setState('failed');
      return;
    }
    this.connectionLost(why);
  }

  /**
   * Whether reconnecting after close `code` would only fail the same way:
   * the same static token (or none) rejected (4001) or expired (4003), or no
   * token to send when the bridge waits for one (4008). A token function may
   * give a better token: then the client reconnects.
   */
  private pointlessToRetry(code: number): boolean {
    const source = this.tokenSource;
    if (typeof source === 'function') return false;
    if (code === CLOSE_UNAUTHORIZED) return true;
    if (code === CLOSE_TOKEN_EXPIRED) return Boolean(source);
    if (code === CLOSE_AUTH_TIMEOUT) return !source;
    return false;
  }

  /** Closes a socket that stopped answering and handles it as lost. */
  private giveUpOnSocket(why: string): void {
    const socket = this.detachSocket();
    if (socket) safeClose(socket, CLIENT_GAVE_UP, why.slice(0, 120));
    this.lastCloseCode = null;
    this.connectionLost(why);
  }

  /**
   * The transport of the next socket (see the `transport` option): SSE after
   * two WebSockets in a row that did not open, until it has been in use for
   * `sseRetryWebSocketMs`.
   */
  private pickTransport(): Transport {
    if (this.transportOption !== 'auto') return this.transportOption;
    if (this.transport === 'sse') {
      const since = this.sseSince;
      if (since === null || this.now() - since < this.sseRetryWebSocketMs) return 'sse';
      this.sseSince = null; // time to try a WebSocket again
      this.webSocketFailures = 0;
      return 'websocket';
    }
    // A runtime without EventSource (Node, some workers) has nothing to fall back to.
    const sseAvailable = this.eventSourceFactory !== undefined || typeof EventSource !== 'undefined';
    return sseAvailable && this.webSocketFailures >= WEBSOCKET_FAILURES_BEFORE_SSE ? 'sse' : 'websocket';
  }

  /** Counts a socket that closed before it opened towards (or away from) the SSE fallback. */
  private countFailedOpen(): void {
    if (!this.socketMade || this.socketOpened || this.transportOption !== 'auto') return;
    if (this.transport === 'websocket') {
      this.webSocketFailures += 1;
    } else if (this.sseSince === null) {
      // SSE did not open either: back to WebSockets for the next attempts.
      this.transport = 'websocket';
      this.webSocketFailures = 0;
    }
  }

  private connectionLost(why: string): void {
    this.countFailedOpen();
    this.endConnection();
    this.socket = null;
    this.setConfirmed([]);
    this.lastError = why;
    if (this.heardOnSocket) this.attempt = 0;
    this.attempt += 1;
    if (this.attempt > this.maxAttempts) {
      this.attempt = this.maxAttempts;
      this.retryDelayMs = null;
      this.lastError = `${why}; gave up after ${this.maxAttempts} reconnection attempts`;
      this.setState('failed');
      return;
    }
    const delay = backoffDelay(this.attempt, this.backoff, this.random);
    this.retryDelayMs = delay;
    this.setState('reconnecting', true);
    this.reconnectTimer = this.timers.setTimeout(() => {
      this.reconnectTimer = null;
      this.openSocket('reconnecting');
    }, delay);
  }

  private detachSocket(): WebSocketLike | null {
    const socket = this.socket;
    this.socket = null;
    if (socket) {
      socket.onopen = null;
      socket.onmessage = null;
      socket.onerror = null;
      socket.onclose = null;
    }
    return socket;
  }

  private socketOpen(): boolean {
    return this._state === 'connected' && this.socket !== null && this.socket.readyState === OPEN;
  }

  /** Open, and (with a token) welcomed: subscribe messages may go out. */
  private socketReady(): boolean {
    return this.ready && this.socketOpen();
  }

  // -------------------------------------------------------------------------
  // Token refresh
  // -------------------------------------------------------------------------

  /**
   * Sets the refresh timer from the token's expiry: `expires_at` of the last
   * `welcome`/`refreshed`, else the `exp` of the JWT last sent. Only with a
   * token function; a static token is left to expire (the bridge closes with 4003).
   */
  private scheduleRefresh(): void {
    this.clearTimer('refreshTimer');
    if (typeof this.tokenSource !== 'function' || this.token === null) return;
    const expiresAt = this.expiresAt ?? jwtExpiry(this.token);
    if (expiresAt === null) return;
    const delay = refreshDelayMs(expiresAt, this.now());
    if (delay === null) return;
    this.setRefreshTimer(delay, () => this.refresh());
  }

  private setRefreshTimer(delay: number, run: () => void): void {
    this.clearTimer('refreshTimer');
    const long = delay > MAX_TIMER_MS;
    this.refreshTimer = this.timers.setTimeout(
      () => {
        this.refreshTimer = null;
        if (long) this.scheduleRefresh();
        else run();
      },
      long ? MAX_TIMER_MS : Math.max(0, delay),
    );
  }

  /** Asks the token function for a new token and sends it in a `refresh` message. */
  private refresh(): void {
    const source = this.tokenSource;
    const socket = this.socket;
    if (typeof source !== 'function' || !socket || !this.socketOpen()) return;
    const generation = this.generation;
    const current = () => generation === this.generation && this.socket === socket && this.socketOpen();
    const deliver = (token: unknown): void => {
      if (!current()) return;
      if (typeof token !== 'string' || token === '') {
        failed(new TypeError('the token function gave no token'));
        return;
      }
      this.token = token;
      this.send({ type: 'refresh', data: { token } });
    };
    const failed = (error: unknown): void => {
      if (!current()) return;
      this.lastError = `token refresh failed: ${describe(error)}`;
      this.emitStatus();
      // Try again halfway to the expiry while there is time; else the bridge closes with 4003 and we reconnect.
      const expiresAt = this.expiresAt ?? jwtExpiry(this.token);
      const remaining = expiresAt === null ? 0 : expiresAt * 1000 - this.now();
      if (remaining > 2_000) this.setRefreshTimer(remaining / 2, () => this.refresh());
    };
    let result: string | Promise<string>;
    try {
      result = source();
    } catch (error) {
      failed(error);
      return;
    }
    if (typeof result === 'string') deliver(result);
    else Promise.resolve(result).then(deliver, failed);
  }

  // -------------------------------------------------------------------------
  // Keepalive
  // -------------------------------------------------------------------------

  private schedulePing(): void {
    this.clearTimer('pingTimer');
    this.pingTimer = this.timers.setTimeout(() => {
      this.pingTimer = null;
      if (!this.socketOpen()) return;
      this.send({ type: 'ping', data: {} });
      if (this.pongTimer === null) {
        this.pongTimer = this.timers.setTimeout(() => {
          this.pongTimer = null;
          this.giveUpOnSocket(`no pong within ${this.pongTimeoutMs} ms`);
        }, this.pongTimeoutMs);
      }
      this.schedulePing();
    }, this.pingMs);
  }

  // -------------------------------------------------------------------------
  // Frames
  // -------------------------------------------------------------------------

  private handleMessage(data: unknown): void {
    if (typeof data !== 'string') {
      this.dispatch(clientError('client_invalid_frame', 'server sent a binary message; frames are JSON text'));
      return;
    }
    this.heardOnSocket = true;
    const decoded = decodeMessage(data);
    this.stats.unknownFramesIgnored += decoded.unknown;
    for (const error of decoded.errors) this.dispatch(error);
    for (const frame of decoded.frames) {
      this.stats.framesReceived += 1;
      // A listener may close the client while a batch is being delivered.
      if (this._state !== 'connected') return;
      if (isEventFrame(frame)) this.handleEvent(frame);
      else this.handleControl(frame);
    }
    // After the message's frames (see DecodedMessage.positions): forward only.
    for (const frame of decoded.positions) {
      this.stats.framesReceived += 1;
      const s = this.topic(frame.data.subscription_type);
      if (s.wanted) s.cursor.advance(frame.data.position);
    }
  }

  private handleControl(frame: Exclude<ServerFrame, AnyEventFrame>): void {
    let gap: Gap | null = null;
    switch (frame.type) {
      case 'welcome': {
        this.connectionId = frame.data.connection_id;
        this.subject = typeof frame.data.subject === 'string' ? frame.data.subject : null;
        this.expiresAt = expiryOf(frame.data.expires_at);
        const interval = Number(frame.data.ping_interval);
        if (this.fixedPingMs === undefined && interval > 0) {
          this.pingMs = interval * 1000;
          this.schedulePing();
        }
        const auto = frame.data.subscriptions ?? [];
        this.setConfirmed(auto);
        for (const s of this.topics) {
          s.byEndpoint = auto.includes(s.topic);
          if (!s.byEndpoint) continue;
          if (s.optedOut) this.send({ type: 'unsubscribe', data: { subscription_type: s.topic } });
          else s.wanted = true;
        }
        if (!this.ready) {
          // Authenticated (or auth is off): now the subscriptions may go out.
          this.ready = true;
          this.sendSubscriptions(true);
        }
        // map_updates subscribed at connect (by the endpoint or the URL's since=) has
        // the URL's box; a box set since then goes now.
        const map = this.topic('map_updates');
        if (map.wanted && (map.byEndpoint || map.resumedAtConnect) && !sameBox(this._viewport, this.sentViewport)) {
          this.sendViewport();
        }
        this.scheduleRefresh();
        this.emitStatus();
        break;
      }
      case 'refreshed':
        // The answer to a `refresh`, or (auth off on the bridge) to the `auth` after the welcome.
        this.expiresAt = expiryOf(frame.data.expires_at);
        this.scheduleRefresh();
        this.emitStatus();
        break;
      case 'subscribed': {
        const topic = frame.data.subscription_type;
        this.setConfirmed(frame.data.subscriptions ?? []);
        // A late answer for a topic dropped since must not bring its position back.
        if (isTopic(topic) && this.topic(topic).wanted) {
          const { recovered, position, reason } = frame.data;
          // Only an explicit `recovered: false` is a gap; a frame without the field is read as recovered.
          gap = this.topic(topic).cursor.confirm({ recovered: recovered !== false, position: position ?? null, reason });
        }
        this.emitStatus();
        break;
      }
      case 'unsubscribed': {
        const topic = frame.data.subscription_type;
        this.setConfirmed(frame.data.subscriptions ?? []);
        // Nothing more comes on it: forget the position stragglers left.
        if (isTopic(topic) && !this.topic(topic).wanted) this.topic(topic).cursor.reset();
        this.emitStatus();
        break;
      }
      case 'pong':
        this.clearTimer('pongTimer');
        break;
      case 'error':
        break;
    }
    this.dispatch(frame);
    if (gap) {
      this.stats.gaps += 1;
      for (const listener of [...this.gapListeners]) this.call(listener, gap);
    }
  }

  /** Delivers an event unless the topic's cursor has seen its position. */
  private handleEvent(frame: AnyEventFrame): void {
    if (!this.topic(frame.subscription_type).cursor.accept(frame)) {
      this.stats.duplicatesDropped += 1;
      return;
    }
    this.stats.eventsDelivered += 1;
    this.dispatch(frame);
  }

  // -------------------------------------------------------------------------
  // Subscriptions
  // -------------------------------------------------------------------------

  private topic(topic: Topic): TopicState {
    const s = isTopic(topic) ? this.topics[TOPICS.indexOf(topic)] : undefined;
    if (!s) throw new TypeError(`unknown subscription type: ${String(topic)}`);
    return s;
  }

  /**
   * Subscribes on the open socket; with `since` when the topic has a position
   * (given at construction), which the bridge resumes after.
   */
  private sendSubscribe(s: TopicState): void {
    const data: SubscribeMessage['data'] = { subscription_type: s.topic };
    const since = s.cursor.position;
    if (since) data.since = since;
    if (s.topic === 'map_updates') {
      if (this._viewport !== null) data.bbox = { ...this._viewport };
      this.sentViewport = this._viewport;
    }
    this.send({ type: 'subscribe', data });
  }

  private sendViewport(): void {
    const bbox = this._viewport === null ? null : { ...this._viewport };
    this.sentViewport = this._viewport;
    this.send({ type: 'viewport', data: { subscription_type: 'map_updates', bbox } });
  }

  /**
   * Subscribes the wanted topics the socket's URL did not resume, and
   * unsubscribes those it resumed but that were dropped since. After a
   * `welcome`, the topics the endpoint subscribed on its own are left to it.
   */
  private sendSubscriptions(afterWelcome: boolean): void {
    for (const s of this.topics) {
      if (afterWelcome && s.byEndpoint) continue;
      // Resumed by the URL: the bridge answers with `subscribed`, then replays.
      if (s.resumedAtConnect && !s.wanted) this.send({ type: 'unsubscribe', data: { subscription_type: s.topic } });
      else if (!s.resumedAtConnect && s.wanted) this.sendSubscribe(s);
    }
  }

  private setConfirmed(subscriptions: readonly unknown[]): void {
    for (const s of this.topics) s.confirmed = subscriptions.includes(s.topic);
  }

  // -------------------------------------------------------------------------
  // Plumbing
  // -------------------------------------------------------------------------

  private dispatch(frame: ServerFrame): void {
    for (const listener of [...this.frameListeners]) this.call(listener, frame);
    const typed = this.typeListeners.get(frame.type);
    if (typed) for (const listener of [...typed]) this.call(listener, frame);
  }

  private call<T>(listener: Listener<T>, value: T): void {
    try {
      listener(value);
    } catch (error) {
      try {
        this.onListenerError(error);
      } catch {
        // An error reporter that throws is ignored: nothing escapes into the socket's callbacks.
      }
    }
  }

  private setState(state: ConnectionState, force = false): void {
    if (this._state === state && !force) return;
    this._state = state;
    this.emitStatus();
  }

  private emitStatus(): void {
    const status = this.status;
    for (const listener of [...this.statusListeners]) this.call(listener, status);
  }

  private clearTimer(name: 'reconnectTimer' | 'connectTimer' | 'pingTimer' | 'pongTimer' | 'refreshTimer'): void {
    const handle = this[name];
    if (handle !== null) {
      this.timers.clearTimeout(handle);
      this[name] = null;
    }
  }

  /** Stops the current connection's timers and drops any token still being fetched for it. */
  private endConnection(): void {
    this.generation += 1;
    this.ready = false;
    this.clearTimer('connectTimer');
    this.clearTimer('pingTimer');
    this.clearTimer('pongTimer');
    this.clearTimer('refreshTimer');
  }
}

function safeClose(socket: WebSocketLike, code: number, reason: string): void {
  try {
    socket.close(code, reason);
  } catch {
    // Closing an already failed socket may throw in some runtimes; it is gone either way.
  }
}

/**
 * The box `RealtimeClient.setViewport` would apply for `bbox` (null: whole world),
 * or RangeError, the same check and normalization, without a client: validate a
 * box before keeping it.
 */
export function checkViewport(bbox: BoundingBox | null): BoundingBox | null {
  return bbox === null ? null : normalizeBox(bbox);
}

/** `url` with `bbox=W,S,E,N` when there is a box (the bridge's `?bbox=`: plain decimal numbers). */
function withBbox(url: string, box: BoundingBox | null): string {
  if (box === null) return url;
  const value = [box.west, box.south, box.east, box.north].map((n) => String(n)).join(',');
  return `${url}${url.includes('?') ? '&' : '?'}bbox=${value}`;
}

/** `box` within the bridge's ranges (see `RealtimeClient.setViewport`); RangeError if it cannot be. */
function normalizeBox(box: BoundingBox): BoundingBox {
  const { west, south, east, north } = box;
  for (const [name, value] of Object.entries({ west, south, east, north })) {
    if (typeof value !== 'number' || !Number.isFinite(value)) {
      throw new RangeError(`bbox.${name} must be a finite number, got ${String(value)}`);
    }
  }
  if (south > north) throw new RangeError(`bbox.south (${south}) must not exceed bbox.north (${north})`);
  const clampLat = (lat: number): number => Math.min(90, Math.max(-90, lat));
  if (east - west >= 360) return { west: -180, south: clampLat(south), east: 180, north: clampLat(north) };
  return { west: wrapLon(west), south: clampLat(south), east: wrapLon(east), north: clampLat(north) };
}

/** `lon` in [-180, 180]: unchanged when already inside, else wrapped. */
function wrapLon(lon: number): number {
  if (lon >= -180 && lon <= 180) return lon;
  const wrapped = (((lon + 180) % 360) + 360) % 360 - 180;
  return wrapped;
}

function sameBox(a: BoundingBox | null, b: BoundingBox | null): boolean {
  if (a === null || b === null) return a === b;
  return a.west === b.west && a.south === b.south && a.east === b.east && a.north === b.north;
}

/** An `expires_at` field: unix seconds, or null when absent or not a number. */
function expiryOf(value: unknown): number | null {
  return typeof value === 'number' && Number.isFinite(value) ? value : null;
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
