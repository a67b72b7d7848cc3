/** Test doubles: a scriptable WebSocket and frame builders. */
import type { WebSocketLike } from '../src/client';
import type { ClientMessage, EventPayloads, EventType, GapReason, StreamPosition, Topic } from '../src/frames';
import { EVENT_TOPICS } from '../src/frames';

export class FakeSocket implements WebSocketLike {
  readyState = 0;
  readonly sent: string[] = [];
  closedWith: { code: number | undefined; reason: string | undefined } | null = null;
  onopen: ((event: unknown) => void) | null = null;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: ((event: { code: number; reason: string }) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;

  constructor(readonly url: string) {}

  send(data: string): void {
    if (this.readyState !== 1) throw new Error('InvalidStateError: socket not open');
    this.sent.push(data);
  }

  close(code?: number, reason?: string): void {
    this.closedWith = { code, reason };
    this.readyState = 3;
  }

  // --- the server's side ---

  open(): void {
    this.readyState = 1;
    this.onopen?.({});
  }

  /** Delivers one text message: an object or array is sent as JSON, a string as is. */
  receive(message: unknown): void {
    this.onmessage?.({ data: typeof message === 'string' ? message : JSON.stringify(message) });
  }

  /** The server (or the network) closes the socket. */
  serverClose(code = 1006, reason = ''): void {
    this.readyState = 3;
    this.onerror?.({});
    this.onclose?.({ code, reason });
  }

  /** The messages the client sent of `type`, parsed. */
  ofType<T extends ClientMessage['type']>(type: T): Extract<ClientMessage, { type: T }>[] {
    return this.messages().filter((m): m is Extract<ClientMessage, { type: T }> => m.type === type);
  }

  /** The tokens the client sent in `auth` and `refresh` messages, in order. */
  tokens(): { type: 'auth' | 'refresh'; token: string }[] {
    return this.messages().flatMap((m) => (m.type === 'auth' || m.type === 'refresh' ? [{ type: m.type, token: m.data.token }] : []));
  }

  /** What the client sent, parsed. */
  messages(): ClientMessage[] {
    return this.sent.map((s) => JSON.parse(s) as ClientMessage);
  }

  /** The `since` query parameters of the URL this socket was opened with. */
  since(): string[] {
    return new URL(this.url).searchParams.getAll('since');
  }

  subscribes(): { topic: Topic; since: StreamPosition | undefined }[] {
    return this.messages().flatMap((m) =>
      m.type === 'subscribe' ? [{ topic: m.data.subscription_type, since: m.data.since }] : [],
    );
  }
}

export function fakeSockets(): { sockets: FakeSocket[]; factory: (url: string) => FakeSocket; last: () => FakeSocket } {
  const sockets: FakeSocket[] = [];
  return {
    sockets,
    factory: (url: string) => {
      const socket = new FakeSocket(url);
      sockets.push(socket);
      return socket;
    },
    last: () => {
      const s = sockets[sockets.length - 1];
      if (!s) throw new Error('no socket was opened');
      return s;
    },
  };
}

export const TS = '2024-01-15T10:30:00Z';

export function welcome(
  subscriptions: Topic[] = [],
  pingInterval = 30,
  auth?: { subject: string; expires_at: number | null },
) {
  return {
    type: 'welcome',
    data: {
      connection_id: 'conn-1',
      endpoint: '/ws/connect',
      subscriptions,
      subscription_types: Object.values(EVENT_TOPICS),
      ping_interval: pingInterval,
      ...(auth ?? {}),
    },
    timestamp: TS,
  };
}

/** The bridge's answer to a `refresh` (or, with auth off, to the `auth` after its welcome). */
export function refreshed(expiresAt: number | null) {
  return { type: 'refreshed', data: { expires_at: expiresAt }, timestamp: TS };
}

/** Base64url without padding, as in a JWT. */
function base64url(text: string): string {
  return Buffer.from(text, 'utf8').toString('base64').replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_');
}

/** An unsigned-looking JWT with `claims` as its payload (the client never checks signatures). */
export function jwt(claims: Record<string, unknown>): string {
  return `${base64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }))}.${base64url(JSON.stringify(claims))}.c2lnbmF0dXJl`;
}

/**
 * A token function that gives `token-1`, `token-2`, ... (or JWTs expiring
 * `lifetimeS` seconds from `Date.now()`), and counts its calls.
 */
export function tokenSequence(lifetimeS?: number): { next: () => string; calls: () => number; issued: string[] } {
  const issued: string[] = [];
  return {
    issued,
    calls: () => issued.length,
    next: () => {
      const n = issued.length + 1;
      const token =
        lifetimeS === undefined
          ? `token-${n}`
          : jwt({ sub: 'user-1', n, exp: Math.floor(Date.now() / 1000) + lifetimeS });
      issued.push(token);
      return token;
    },
  };
}

export function subscribed(
  topic: Topic,
  position: StreamPosition | null,
  recovered = true,
  subscriptions: Topic[] = [topic],
  reason?: GapReason,
) {
  return {
    type: 'subscribed',
    data: { subscription_type: topic, subscriptions, recovered, position, ...(reason ? { reason } : {}) },
    timestamp: TS,
  };
}

export const SAMPLE: EventPayloads = {
  package_update: {
    package_id: 'p-1',
    tracking_number: 'PKG123456789',
    status: 'in_transit',
    location: 'Chicago Distribution Center',
    estimated_delivery: '2024-01-16T14:00:00Z',
    last_scan_time: '2024-01-15T10:30:00Z',
    carrier: 'FedEx',
  },
  anomaly_detected: {
    package_id: 'p-1',
    anomaly_type: 'delayed_delivery',
    severity: 'high',
    description: 'Package delayed by 4 hours',
    recommended_action: 'reroute_through_alternative_center',
    confidence_score: 0.87,
    detected_at: '2024-01-15T10:30:00Z',
  },
  dashboard_metrics: {
    total_packages: 1247,
    in_transit: 892,
    delivered: 312,
    delayed: 43,
    anomalies: 12,
    recovery_rate: 0.94,
    avg_delivery_time: 2.5,
  },
  notification: {
    notification_id: 'n-1',
    user_id: '',
    title: 'Delay',
    message: 'Package p-1 is late',
    severity: 'medium',
    package_id: 'p-1',
    action_url: '/packages/p-1',
  },
  map_update: {
    package_id: 'p-1',
    vehicle_id: 'v-9',
    latitude: 41.88,
    longitude: -87.63,
    heading: 90,
    speed_kmh: 60,
    route_id: 'r-1',
    next_stop: 'Detroit',
    status: 'in_transit',
  },
  agent_activity: {
    agent_id: 'recovery-agent-2',
    agent_type: 'recovery',
    action: 'reroute_package',
    outcome: 'succeeded',
    package_id: 'p-1',
    details: 'Rerouted via Detroit',
    duration_ms: 120,
  },
  system_health: {
    component: 'bridge',
    status: 'degraded',
    cpu_percent: 71.5,
    memory_percent: 40,
    latency_ms: 12.5,
    error_rate: 0.2,
    message: 'slow',
  },
};

/** An event frame of `type` at `offset` in `epoch`, with `patch` over the sample payload. */
export function event<T extends EventType>(type: T, offset: number, epoch = 'e1', patch: Partial<EventPayloads[T]> = {}) {
  return {
    type,
    data: { ...SAMPLE[type], ...patch },
    timestamp: TS,
    subscription_type: EVENT_TOPICS[type],
    id: `${type}-${epoch}-${offset}`,
    position: { offset, epoch },
  };
}
