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
 * - After a reconnect, every topic the client had is subscribed again with
 *   the last position seen on it, so the bridge replays what was missed.
 *   Events are delivered in position order per topic, and an event whose
 *   position was already seen (same epoch, offset not above the last) is
 *   dropped: nothing is missed or shown twice.
 * - Nothing the server sends throws into the app: error frames, and client-made
 *   `client_*` error frames for unreadable input, go to frame listeners like
 *   any other frame. A listener that throws is reported to `onListenerError`.
 *
 * Time, randomness and the WebSocket are injectable for tests.
 */

import { backoffDelay, resolveBackoff, type BackoffOptions, type ResolvedBackoff } from './backoff';
import {
  TOPICS,
  clientError,
  decodeMessage,
  isEventFrame,
  isTopic,
  type AnyEventFrame,
  type ClientMessage,
  type FrameOf,
  type FrameType,
  type ServerFrame,
  type StreamPosition,
  type Topic,
} from './frames';

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
}

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
  /** Last positions seen, per topic (e.g. kept across a page reload): resumed from. */
  positions?: Partial<Record<Topic, StreamPosition>>;
  /** Reconnection attempts after a lost connection before `failed`. Default 5. */
  maxReconnectAttempts?: number;
  backoff?: BackoffOptions;
  /** Milliseconds between pings. Default: the `ping_interval` of the bridge's welcome, else 25 000. */
  pingIntervalMs?: number;
  /** Milliseconds a pong may take before the connection counts as dead. Default 10 000. */
  pongTimeoutMs?: number;
  /** Milliseconds a socket may take to open. Default 10 000. */
  connectTimeoutMs?: number;
  /** Milliseconds to wait for a resumed topic's replay before delivering what arrived. Default 5 000. */
  resumeTimeoutMs?: number;
  /** Close codes from the server after which the client does not reconnect. Default 1003, 1009. */
  terminalCloseCodes?: readonly number[];
  /** Connect as soon as the client is made. Default false: call `connect()`. */
  autoConnect?: boolean;
  webSocketFactory?: WebSocketFactory;
  timers?: Timers;
  /** Returns a number in [0, 1); default `Math.random`. */
  random?: () => number;
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
}

type Listener<T> = (value: T) => void;

const OPEN = 1;
const NORMAL_CLOSURE = 1000;
/** Close code this client uses when it gives up on a socket (no pong, no open). */
export const CLIENT_GAVE_UP = 4000;
const DEFAULT_PING_MS = 25_000;
const MAX_RESUME_BUFFER = 10_000;

const defaultTimers: Timers = {
  // Looked up at call time, so fake timers installed after import still apply.
  setTimeout: (callback, ms) => globalThis.setTimeout(callback, ms),
  clearTimeout: (handle) => globalThis.clearTimeout(handle as ReturnType<typeof globalThis.setTimeout>),
};

const defaultFactory: WebSocketFactory = (url) => new WebSocket(url) as unknown as WebSocketLike;

/** A topic resubscribed with `since`, whose replay is being collected. */
interface Resume {
  /** The position the replay starts after. */
  since: StreamPosition;
  /** Events held until the replay has caught up, then delivered in offset order. */
  buffer: AnyEventFrame[];
  /** Offsets held, in the epoch of `since`. */
  have: Set<number>;
  /** The lowest offset after `since` not held yet (the replay is complete below it). */
  next: number;
  /** Set by the `subscribed` frame: the replay is complete once it reached this position. */
  until: StreamPosition | null;
  confirmed: boolean;
  recovered: boolean;
  /** How many events were held when the `subscribed` frame came. */
  heldBeforeConfirm: number;
  timer: unknown;
}

export class RealtimeClient {
  readonly url: string;
  private readonly maxAttempts: number;
  private readonly backoff: ResolvedBackoff;
  private readonly fixedPingMs: number | undefined;
  private pingMs: number;
  private readonly pongTimeoutMs: number;
  private readonly connectTimeoutMs: number;
  private readonly resumeTimeoutMs: number;
  private readonly terminalCodes: ReadonlySet<number>;
  private readonly factory: WebSocketFactory;
  private readonly timers: Timers;
  private readonly random: () => number;
  private readonly onListenerError: (error: unknown) => void;

  private _state: ConnectionState = 'idle';
  private socket: WebSocketLike | null = null;
  private attempt = 0;
  private retryDelayMs: number | null = null;
  private connectionId: string | null = null;
  private lastError: string | null = null;
  private lastCloseCode: number | null = null;
  private heardOnSocket = false;

  private reconnectTimer: unknown = null;
  private connectTimer: unknown = null;
  private pingTimer: unknown = null;
  private pongTimer: unknown = null;

  /** The topics this client has: asked for, or subscribed by the endpoint. */
  private readonly topics = new Set<Topic>();
  /** Topics the app unsubscribed from: undone if an endpoint subscribes them on its own. */
  private readonly optedOut = new Set<Topic>();
  /** The subscription list the bridge last reported. */
  private serverTopics: Topic[] = [];
  /** The topics the endpoint subscribed this connection to on its own (from `welcome`). */
  private endpointTopics: Topic[] = [];
  /** Last position delivered, per topic. */
  private readonly positions = new Map<Topic, StreamPosition>();
  /** Where to resume a topic from when no event was seen on it yet (from `subscribed`). */
  private readonly seeds = new Map<Topic, StreamPosition>();
  private readonly resumes = new Map<Topic, Resume>();

  private readonly frameListeners = new Set<Listener<ServerFrame>>();
  private readonly typeListeners = new Map<FrameType, Set<Listener<ServerFrame>>>();
  private readonly statusListeners = new Set<Listener<ConnectionStatus>>();

  readonly stats: ClientStats = {
    framesReceived: 0,
    eventsDelivered: 0,
    duplicatesDropped: 0,
    unknownFramesIgnored: 0,
    reconnects: 0,
  };

  constructor(options: RealtimeClientOptions) {
    this.url = options.url;
    this.maxAttempts = options.maxReconnectAttempts ?? 5;
    if (!(this.maxAttempts >= 0)) throw new RangeError('maxReconnectAttempts must be >= 0');
    this.backoff = resolveBackoff(options.backoff);
    this.fixedPingMs = options.pingIntervalMs;
    this.pingMs = options.pingIntervalMs ?? DEFAULT_PING_MS;
    this.pongTimeoutMs = options.pongTimeoutMs ?? 10_000;
    this.connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
    this.resumeTimeoutMs = options.resumeTimeoutMs ?? 5_000;
    this.terminalCodes = new Set(options.terminalCloseCodes ?? [1003, 1009]);
    this.factory = options.webSocketFactory ?? defaultFactory;
    this.timers = options.timers ?? defaultTimers;
    this.random = options.random ?? Math.random;
    this.onListenerError = options.onListenerError ?? ((error) => console.error('RealtimeClient listener threw', error));
    for (const topic of options.topics ?? []) this.topics.add(topic);
    for (const [topic, position] of Object.entries(options.positions ?? {})) {
      if (isTopic(topic) && position) this.positions.set(topic, { ...position });
    }
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
    };
  }

  get isConnected(): boolean {
    return this._state === 'connected';
  }

  /** The topics this client has, in the protocol's order. */
  get subscriptions(): Topic[] {
    return TOPICS.filter((t) => this.topics.has(t));
  }

  /** The subscription list the bridge last confirmed. */
  get confirmedSubscriptions(): Topic[] {
    return TOPICS.filter((t) => this.serverTopics.includes(t));
  }

  /** The topics the endpoint subscribes a connection to on its own, from its last `welcome`. */
  get endpointSubscriptions(): Topic[] {
    return [...this.endpointTopics];
  }

  /** The last position delivered on `topic`, if any. */
  positionOf(topic: Topic): StreamPosition | null {
    const p = this.positions.get(topic);
    return p ? { ...p } : null;
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
    this.clearConnectionTimers();
    this.clearTimer('reconnectTimer');
    this.dropResumes();
    const socket = this.detachSocket();
    if (socket) safeClose(socket, NORMAL_CLOSURE, reason);
    this.retryDelayMs = null;
    this.serverTopics = [];
    this.setState('closed');
  }

  /** Subscribes to `topic` (now if connected, else on connect). Subscribing twice does nothing. */
  subscribe(topic: Topic): void {
    if (!isTopic(topic)) throw new TypeError(`unknown subscription type: ${String(topic)}`);
    this.optedOut.delete(topic);
    if (this.topics.has(topic)) return;
    this.topics.add(topic);
    if (this.socketOpen()) this.send({ type: 'subscribe', data: { subscription_type: topic } });
    this.emitStatus();
  }

  /** Unsubscribes from `topic`, and forgets its position. */
  unsubscribe(topic: Topic): void {
    if (!isTopic(topic)) throw new TypeError(`unknown subscription type: ${String(topic)}`);
    this.optedOut.add(topic);
    if (!this.topics.delete(topic)) return;
    this.positions.delete(topic);
    this.seeds.delete(topic);
    this.endResume(topic, false);
    if (this.socketOpen()) this.send({ type: 'unsubscribe', data: { subscription_type: topic } });
    this.emitStatus();
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
    this.serverTopics = [];
    this.heardOnSocket = false;
    this.connectionId = null;
    this.setState(state);
    let socket: WebSocketLike;
    try {
      socket = this.factory(this.url);
    } catch (error) {
      this.connectionLost(`cannot open ${this.url}: ${describe(error)}`);
      return;
    }
    this.socket = socket;
    socket.onopen = () => {
      if (this.socket === socket) this.handleOpen();
    };
    socket.onmessage = (event) => {
      if (this.socket === socket) this.handleMessage(event.data);
    };
    socket.onerror = () => {
      if (this.socket === socket) this.lastError = 'WebSocket error';
    };
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.handleClose(event.code, event.reason);
    };
    this.connectTimer = this.timers.setTimeout(() => {
      this.connectTimer = null;
      this.giveUpOnSocket(`no connection within ${this.connectTimeoutMs} ms`);
    }, this.connectTimeoutMs);
  }

  private handleOpen(): void {
    this.clearTimer('connectTimer');
    if (this.attempt > 0) this.stats.reconnects += 1;
    this.setState('connected');
    for (const topic of this.subscriptions) this.sendSubscribe(topic, true);
    this.schedulePing();
  }

  private handleClose(code: number, reason: string): void {
    this.lastCloseCode = code;
    const why = `closed by server (${code}${reason ? `: ${reason}` : ''})`;
    if (this.terminalCodes.has(code)) {
      this.clearConnectionTimers();
      this.dropResumes();
      this.serverTopics = [];
      this.lastError = why;
      this.setState('failed');
      return;
    }
    this.connectionLost(why);
  }

  /** Closes a socket that stopped answering and handles it as lost. */
  private giveUpOnSocket(why: string): void {
    const socket = this.detachSocket();
    if (socket) safeClose(socket, CLIENT_GAVE_UP, why.slice(0, 120));
    this.lastCloseCode = null;
    this.connectionLost(why);
  }

  private connectionLost(why: string): void {
    this.clearConnectionTimers();
    this.dropResumes();
    this.socket = null;
    this.serverTopics = [];
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
  }

  private handleControl(frame: Exclude<ServerFrame, AnyEventFrame>): void {
    switch (frame.type) {
      case 'welcome': {
        this.connectionId = frame.data.connection_id;
        const interval = Number(frame.data.ping_interval);
        if (this.fixedPingMs === undefined && interval > 0) {
          this.pingMs = interval * 1000;
          this.schedulePing();
        }
        this.serverTopics = (frame.data.subscriptions ?? []).filter(isTopic);
        this.endpointTopics = [...this.serverTopics];
        for (const topic of this.serverTopics) {
          if (this.optedOut.has(topic)) {
            this.send({ type: 'unsubscribe', data: { subscription_type: topic } });
          } else if (!this.topics.has(topic)) {
            this.topics.add(topic);
          }
        }
        this.emitStatus();
        break;
      }
      case 'subscribed': {
        const topic = frame.data.subscription_type;
        this.serverTopics = (frame.data.subscriptions ?? []).filter(isTopic);
        const position = frame.data.position;
        if (isTopic(topic) && position && !this.positions.has(topic)) this.seeds.set(topic, { ...position });
        const resume = isTopic(topic) ? this.resumes.get(topic) : undefined;
        if (resume && !resume.confirmed) {
          resume.confirmed = true;
          resume.until = position ?? null;
          resume.recovered = frame.data.recovered !== false;
          resume.heldBeforeConfirm = resume.buffer.length;
          this.emitStatus();
          this.dispatch(frame);
          this.maybeFinishResume(topic);
          return;
        }
        this.emitStatus();
        break;
      }
      case 'unsubscribed':
        this.serverTopics = (frame.data.subscriptions ?? []).filter(isTopic);
        this.emitStatus();
        break;
      case 'pong':
        this.clearTimer('pongTimer');
        break;
      case 'error':
        break;
    }
    this.dispatch(frame);
  }

  private handleEvent(frame: AnyEventFrame): void {
    const topic = frame.subscription_type;
    const resume = this.resumes.get(topic);
    if (resume) {
      resume.buffer.push(frame);
      const p = frame.position;
      if (p && p.epoch === resume.since.epoch && p.offset >= resume.next) {
        resume.have.add(p.offset);
        while (resume.have.has(resume.next)) resume.next += 1;
      }
      if (resume.buffer.length >= MAX_RESUME_BUFFER) this.endResume(topic, true);
      else this.maybeFinishResume(topic);
      return;
    }
    this.deliverEvent(frame);
  }

  /** Delivers an event unless its position was already seen. */
  private deliverEvent(frame: AnyEventFrame): void {
    const topic = frame.subscription_type;
    const position = frame.position;
    if (position) {
      const last = this.positions.get(topic);
      if (last && last.epoch === position.epoch && position.offset <= last.offset) {
        this.stats.duplicatesDropped += 1;
        return;
      }
      this.positions.set(topic, { offset: position.offset, epoch: position.epoch });
      this.seeds.delete(topic);
    }
    this.stats.eventsDelivered += 1;
    this.dispatch(frame);
  }

  // -------------------------------------------------------------------------
  // Subscriptions and resume
  // -------------------------------------------------------------------------

  /**
   * Subscribes on the open socket. On (re)connect, a topic with a known
   * position is resumed: its events are held until the replay has caught up
   * with the position the bridge reports in `subscribed`, then delivered in
   * order. That way live events that an auto-subscribing endpoint sends before
   * the replay cannot make the replayed ones look like duplicates.
   */
  private sendSubscribe(topic: Topic, resume: boolean): void {
    const since = resume ? (this.positions.get(topic) ?? this.seeds.get(topic)) : undefined;
    const data: { subscription_type: Topic; since?: StreamPosition } = { subscription_type: topic };
    if (since) {
      data.since = { ...since };
      if (!this.positions.has(topic)) this.positions.set(topic, { ...since });
      this.endResume(topic, false);
      const timer = this.timers.setTimeout(() => this.endResume(topic, true), this.resumeTimeoutMs);
      this.resumes.set(topic, {
        since: { ...since },
        buffer: [],
        have: new Set(),
        next: since.offset + 1,
        until: null,
        confirmed: false,
        recovered: true,
        heldBeforeConfirm: 0,
        timer,
      });
    }
    this.send({ type: 'subscribe', data });
  }

  /**
   * Ends a confirmed resume once the replay has caught up with the position
   * the bridge reported: every offset from `since` up to it is held (whatever
   * order the replay and live events came in), or, when the bridge could not
   * recover (`recovered: false`, new epoch), an event at or past it arrived
   * after the `subscribed` frame.
   */
  private maybeFinishResume(topic: Topic): void {
    const resume = this.resumes.get(topic);
    if (!resume || !resume.confirmed) return;
    const until = resume.until;
    const last = this.positions.get(topic);
    let caughtUp: boolean;
    if (until === null || until.offset <= 0) caughtUp = true;
    else if (last !== undefined && last.epoch === until.epoch && last.offset >= until.offset) caughtUp = true;
    else if (resume.recovered && resume.since.epoch === until.epoch) caughtUp = resume.next > until.offset;
    else
      caughtUp = resume.buffer
        .slice(resume.heldBeforeConfirm)
        .some((f) => f.position !== null && f.position.epoch === until.epoch && f.position.offset >= until.offset);
    if (caughtUp) this.endResume(topic, true);
  }

  /** Ends a resume; with `deliver`, delivers what it held in position order. */
  private endResume(topic: Topic, deliver: boolean): void {
    const resume = this.resumes.get(topic);
    if (!resume) return;
    this.resumes.delete(topic);
    this.timers.clearTimeout(resume.timer);
    if (!deliver) return;
    const epoch = resume.until?.epoch ?? this.positions.get(topic)?.epoch;
    const rank = (f: AnyEventFrame): [number, number] =>
      f.position === null ? [1, Number.MAX_SAFE_INTEGER] : [f.position.epoch === epoch ? 1 : 0, f.position.offset];
    const ordered = resume.buffer
      .map((frame, index) => ({ frame, index, key: rank(frame) }))
      .sort((a, b) => a.key[0] - b.key[0] || a.key[1] - b.key[1] || a.index - b.index);
    for (const { frame } of ordered) {
      if (this._state !== 'connected') return;
      this.deliverEvent(frame);
    }
  }

  private dropResumes(): void {
    for (const topic of [...this.resumes.keys()]) this.endResume(topic, false);
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

  private clearTimer(name: 'reconnectTimer' | 'connectTimer' | 'pingTimer' | 'pongTimer'): void {
    const handle = this[name];
    if (handle !== null) {
      this.timers.clearTimeout(handle);
      this[name] = null;
    }
  }

  private clearConnectionTimers(): void {
    this.clearTimer('connectTimer');
    this.clearTimer('pingTimer');
    this.clearTimer('pongTimer');
  }
}

function safeClose(socket: WebSocketLike, code: number, reason: string): void {
  try {
    socket.close(code, reason);
  } catch {
    // Closing an already failed socket may throw in some runtimes; it is gone either way.
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
