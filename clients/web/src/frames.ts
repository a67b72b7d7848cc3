/**
 * The frames of the ClearPath Realtime WebSocket bridge, as TypeScript types.
 *
 * Payloads mirror the messages of `protos/clearpath/realtime/v1/events.proto`
 * in their JSON form: snake_case field names, enum values in lowercase with
 * the enum prefix stripped (`PACKAGE_STATUS_IN_TRANSIT` -> `"in_transit"`),
 * timestamps as RFC 3339 strings ending in `Z` (or `null` when unset), uint32
 * and double as JSON numbers.
 *
 * The interfaces cannot drift from the protos: each has a runtime schema
 * (`PAYLOAD_SCHEMAS`) that the compiler checks against the interface (see the
 * `_Check*` aliases at the bottom) and that `test/frames.test.ts` checks
 * against the `.proto` files.
 */

// ---------------------------------------------------------------------------
// Enums
// ---------------------------------------------------------------------------

/** Subscription types (proto enum `Topic`, without `TOPIC_UNSPECIFIED`). */
export const TOPICS = [
  'package_updates',
  'anomalies',
  'dashboard_metrics',
  'notifications',
  'map_updates',
  'agent_activity',
  'system_health',
] as const;
export type Topic = (typeof TOPICS)[number];

/** Proto enum `PackageStatus`; `unspecified` only appears as an unset default. */
export const PACKAGE_STATUSES = [
  'unspecified',
  'created',
  'in_transit',
  'out_for_delivery',
  'delivered',
  'delayed',
  'returned',
  'lost',
] as const;
export type PackageStatus = (typeof PACKAGE_STATUSES)[number];

/** Proto enum `Severity`, in increasing order. */
export const SEVERITIES = ['unspecified', 'low', 'medium', 'high', 'critical'] as const;
export type Severity = (typeof SEVERITIES)[number];

/** Proto enum `AnomalyType`. */
export const ANOMALY_TYPES = [
  'unspecified',
  'delayed_delivery',
  'route_deviation',
  'missed_scan',
  'temperature_excursion',
  'damaged',
  'wrong_location',
] as const;
export type AnomalyType = (typeof ANOMALY_TYPES)[number];

/** Proto enum `HealthStatus`. */
export const HEALTH_STATUSES = ['unspecified', 'healthy', 'degraded', 'down'] as const;
export type HealthStatus = (typeof HEALTH_STATUSES)[number];

/** Every enum used by a payload, by its proto name. */
export const ENUMS = {
  Topic: ['unspecified', ...TOPICS],
  PackageStatus: PACKAGE_STATUSES,
  Severity: SEVERITIES,
  AnomalyType: ANOMALY_TYPES,
  HealthStatus: HEALTH_STATUSES,
} as const;
export type EnumName = keyof typeof ENUMS;

/** Returns true when `value` is one of the seven subscription types. */
export function isTopic(value: unknown): value is Topic {
  return typeof value === 'string' && (TOPICS as readonly string[]).includes(value);
}

// ---------------------------------------------------------------------------
// Payloads (proto messages)
// ---------------------------------------------------------------------------

/** RFC 3339 UTC timestamp ending in `Z`, e.g. `2024-01-15T10:30:00Z`. */
export type Timestamp = string;

/** Proto `PackageUpdate`: a package's status changed or it was scanned. */
export interface PackageUpdate {
  package_id: string;
  tracking_number: string;
  status: PackageStatus;
  location: string;
  estimated_delivery: Timestamp | null;
  last_scan_time: Timestamp | null;
  carrier: string;
}

/** Proto `AnomalyDetected`: a detector found something wrong with a package. */
export interface AnomalyDetected {
  package_id: string;
  anomaly_type: AnomalyType;
  severity: Severity;
  description: string;
  recommended_action: string;
  /** From 0 to 1. */
  confidence_score: number;
  detected_at: Timestamp | null;
}

/** Proto `DashboardMetrics`: aggregate figures of the network. */
export interface DashboardMetrics {
  total_packages: number;
  in_transit: number;
  delivered: number;
  delayed: number;
  anomalies: number;
  /** From 0 to 1. */
  recovery_rate: number;
  /** Mean delivery time in days. */
  avg_delivery_time: number;
}

/** Proto `Notification`: a message for people (empty `user_id`: everyone). */
export interface Notification {
  notification_id: string;
  user_id: string;
  title: string;
  message: string;
  severity: Severity;
  package_id: string;
  action_url: string;
}

/** Proto `MapUpdate`: a package or vehicle moved (WGS 84 degrees). */
export interface MapUpdate {
  package_id: string;
  vehicle_id: string;
  latitude: number;
  longitude: number;
  /** Degrees clockwise from north. */
  heading: number;
  speed_kmh: number;
  route_id: string;
  next_stop: string;
  status: PackageStatus;
}

/** Proto `AgentActivity`: an AI agent did something. */
export interface AgentActivity {
  agent_id: string;
  agent_type: string;
  action: string;
  outcome: string;
  package_id: string;
  details: string;
  duration_ms: number;
}

/** Proto `SystemHealth`: the health of one component. */
export interface SystemHealth {
  component: string;
  status: HealthStatus;
  cpu_percent: number;
  memory_percent: number;
  latency_ms: number;
  error_rate: number;
  message: string;
}

/** Proto `StreamPosition`: where an event stands in its topic's stream. */
export interface StreamPosition {
  offset: number;
  epoch: string;
}

/** Event frame `type` -> payload. */
export interface EventPayloads {
  package_update: PackageUpdate;
  anomaly_detected: AnomalyDetected;
  dashboard_metrics: DashboardMetrics;
  notification: Notification;
  map_update: MapUpdate;
  agent_activity: AgentActivity;
  system_health: SystemHealth;
}
export type EventType = keyof EventPayloads;

/** Event frame `type` -> the topic it is published on. */
export const EVENT_TOPICS = {
  package_update: 'package_updates',
  anomaly_detected: 'anomalies',
  dashboard_metrics: 'dashboard_metrics',
  notification: 'notifications',
  map_update: 'map_updates',
  agent_activity: 'agent_activity',
  system_health: 'system_health',
} as const satisfies Record<EventType, Topic>;

export const EVENT_TYPES = Object.keys(EVENT_TOPICS) as EventType[];

// ---------------------------------------------------------------------------
// Runtime schemas (checked against the interfaces here, against the protos in tests)
// ---------------------------------------------------------------------------

/** How a proto field appears in JSON. */
export type FieldKind = 'string' | 'number' | 'bool' | 'timestamp' | { readonly enum: EnumName };

/** Payload message name in the proto, and its fields in proto field order. */
export const PAYLOAD_SCHEMAS = {
  package_update: {
    message: 'PackageUpdate',
    fields: {
      package_id: 'string',
      tracking_number: 'string',
      status: { enum: 'PackageStatus' },
      location: 'string',
      estimated_delivery: 'timestamp',
      last_scan_time: 'timestamp',
      carrier: 'string',
    },
  },
  anomaly_detected: {
    message: 'AnomalyDetected',
    fields: {
      package_id: 'string',
      anomaly_type: { enum: 'AnomalyType' },
      severity: { enum: 'Severity' },
      description: 'string',
      recommended_action: 'string',
      confidence_score: 'number',
      detected_at: 'timestamp',
    },
  },
  dashboard_metrics: {
    message: 'DashboardMetrics',
    fields: {
      total_packages: 'number',
      in_transit: 'number',
      delivered: 'number',
      delayed: 'number',
      anomalies: 'number',
      recovery_rate: 'number',
      avg_delivery_time: 'number',
    },
  },
  notification: {
    message: 'Notification',
    fields: {
      notification_id: 'string',
      user_id: 'string',
      title: 'string',
      message: 'string',
      severity: { enum: 'Severity' },
      package_id: 'string',
      action_url: 'string',
    },
  },
  map_update: {
    message: 'MapUpdate',
    fields: {
      package_id: 'string',
      vehicle_id: 'string',
      latitude: 'number',
      longitude: 'number',
      heading: 'number',
      speed_kmh: 'number',
      route_id: 'string',
      next_stop: 'string',
      status: { enum: 'PackageStatus' },
    },
  },
  agent_activity: {
    message: 'AgentActivity',
    fields: {
      agent_id: 'string',
      agent_type: 'string',
      action: 'string',
      outcome: 'string',
      package_id: 'string',
      details: 'string',
      duration_ms: 'number',
    },
  },
  system_health: {
    message: 'SystemHealth',
    fields: {
      component: 'string',
      status: { enum: 'HealthStatus' },
      cpu_percent: 'number',
      memory_percent: 'number',
      latency_ms: 'number',
      error_rate: 'number',
      message: 'string',
    },
  },
} as const satisfies Record<EventType, { message: string; fields: Record<string, FieldKind> }>;

/** The TypeScript type a schema field kind stands for. */
type KindType<K> = K extends 'string'
  ? string
  : K extends 'number'
    ? number
    : K extends 'bool'
      ? boolean
      : K extends 'timestamp'
        ? Timestamp | null
        : K extends { readonly enum: infer E extends EnumName }
          ? (typeof ENUMS)[E][number]
          : never;

/** The payload type a schema describes. */
export type PayloadFromSchema<T extends EventType> = {
  -readonly [F in keyof (typeof PAYLOAD_SCHEMAS)[T]['fields']]: KindType<(typeof PAYLOAD_SCHEMAS)[T]['fields'][F]>;
};

// ---------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------

/** Every server->client message has this shape. */
export interface FrameEnvelope<T extends string, D> {
  type: T;
  data: D;
  /** RFC 3339 UTC, ending in Z. */
  timestamp: Timestamp;
}

/** An event published on a topic. */
export interface EventFrame<T extends EventType = EventType> extends FrameEnvelope<T, EventPayloads[T]> {
  /** The topic the event was published on. */
  subscription_type: Topic;
  /** The event's id. */
  id: string;
  /** Where the event stands in its topic's stream. */
  position: StreamPosition | null;
  /** When the core accepted the event (RFC 3339 UTC); absent from bridges that do not say. */
  published_at?: Timestamp;
  /** The W3C trace context (`traceparent` header value) the event was published under, if any. */
  traceparent?: string;
}

/** One event frame of each type, as a discriminated union. */
export type AnyEventFrame = { [T in EventType]: EventFrame<T> }[EventType];

export interface WelcomeData {
  connection_id: string;
  endpoint: string;
  /** Topics this endpoint subscribed the connection to on its own. */
  subscriptions: Topic[];
  /** Every topic the bridge knows. */
  subscription_types: Topic[];
  /** Seconds between client pings. */
  ping_interval: number;
  /** Who the connection's token names (the JWT `sub`); absent from bridges without authentication. */
  subject?: string;
  /** When the connection's token expires, in unix seconds; null: it does not (or auth is off). */
  expires_at?: number | null;
}

/**
 * The answer to a `refresh` message (the token was replaced in place, the
 * subscriptions go on), and, from a bridge with authentication off, the
 * answer to the `auth` message.
 */
export interface RefreshedData {
  /** When the new token expires, in unix seconds; null: it does not (or auth is off). */
  expires_at: number | null;
}

/**
 * Why events of a topic were lost: its history was reset (e.g. an in-memory
 * core restarted), the resume position is older than the history kept, or it
 * is ahead of the topic (a position from some other core).
 */
export const GAP_REASONS = ['epoch_changed', 'history_trimmed', 'position_ahead'] as const;
export type GapReason = (typeof GAP_REASONS)[number];

/**
 * The answer to a subscribe (or to a `?since=` resume), and, unsolicited with
 * `recovered: false`, the notice that the topic's history was lost.
 */
export interface SubscribedData {
  subscription_type: Topic;
  /** The connection's full current subscription list. */
  subscriptions: Topic[];
  /**
   * True when every event after the resume position will be sent (or no
   * resume was asked for). False: a gap; the stream continues after `position`.
   */
  recovered: boolean;
  /** With `recovered`, the topic's latest position when the subscription started; without, where the stream continues. */
  position: StreamPosition | null;
  /** Set when `recovered` is false. */
  reason?: GapReason;
}

export interface UnsubscribedData {
  subscription_type: Topic;
  subscriptions: Topic[];
}

/** Error codes the bridge sends; `client_*` codes are made by this client for bad input it received. */
export type ErrorCode =
  | 'invalid_json'
  | 'invalid_message'
  | 'unknown_subscription_type'
  | 'rate_limited'
  | 'unauthorized'
  // `forbidden`: the token does not allow the subscription type asked for; nothing changed.
  | 'forbidden'
  | 'slow_consumer'
  | 'client_invalid_json'
  | 'client_invalid_frame'
  | (string & {});

export interface ErrorData {
  code: ErrorCode;
  message: string;
}

export type WelcomeFrame = FrameEnvelope<'welcome', WelcomeData>;
export type SubscribedFrame = FrameEnvelope<'subscribed', SubscribedData>;
export type UnsubscribedFrame = FrameEnvelope<'unsubscribed', UnsubscribedData>;
export type PongFrame = FrameEnvelope<'pong', Record<string, never>>;
export type ErrorFrame = FrameEnvelope<'error', ErrorData>;
export type RefreshedFrame = FrameEnvelope<'refreshed', RefreshedData>;
export type ControlFrame = WelcomeFrame | SubscribedFrame | UnsubscribedFrame | PongFrame | ErrorFrame | RefreshedFrame;
export type ControlType = ControlFrame['type'];

/** Any server->client frame. Narrow it on `type`. */
export type ServerFrame = AnyEventFrame | ControlFrame;
export type FrameType = ServerFrame['type'];
/** The frame of one type. */
export type FrameOf<T extends FrameType> = Extract<ServerFrame, { type: T }>;

export const CONTROL_TYPES: readonly ControlType[] = ['welcome', 'subscribed', 'unsubscribed', 'pong', 'error', 'refreshed'];

export function isEventType(value: unknown): value is EventType {
  return typeof value === 'string' && Object.prototype.hasOwnProperty.call(EVENT_TOPICS, value);
}

export function isEventFrame(frame: ServerFrame): frame is AnyEventFrame {
  return isEventType(frame.type);
}

// ---------------------------------------------------------------------------
// Client->server messages
// ---------------------------------------------------------------------------

export type SubscribeMessage = {
  type: 'subscribe';
  data: { subscription_type: Topic; since?: StreamPosition };
};
export type UnsubscribeMessage = { type: 'unsubscribe'; data: { subscription_type: Topic } };
export type PingMessage = { type: 'ping'; data: Record<string, never> };
/** Authenticates the connection: the first message on a socket when the client has a token. */
export type AuthMessage = { type: 'auth'; data: { token: string } };
/** Replaces the connection's token in place (same subject); answered by `refreshed`. */
export type RefreshMessage = { type: 'refresh'; data: { token: string } };
export type ClientMessage = SubscribeMessage | UnsubscribeMessage | PingMessage | AuthMessage | RefreshMessage;

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

/** The result of decoding one WebSocket text message. */
export interface DecodedMessage {
  /** The well-formed frames, in order. */
  frames: ServerFrame[];
  /** One client-made error frame per element that could not be read. */
  errors: ErrorFrame[];
  /** Elements of a type this client does not know (ignored for forward compatibility). */
  unknown: number;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Makes an error frame that did not come from the server. */
export function clientError(code: ErrorCode, message: string, now: Date = new Date()): ErrorFrame {
  return { type: 'error', data: { code, message }, timestamp: now.toISOString() };
}

/**
 * Decodes one text message: a frame object, or a JSON array of them.
 * Never throws: what cannot be read becomes a `client_*` error frame.
 */
export function decodeMessage(text: string): DecodedMessage {
  const out: DecodedMessage = { frames: [], errors: [], unknown: 0 };
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    out.errors.push(clientError('client_invalid_json', `server sent a message that is not JSON (${text.length} chars)`));
    return out;
  }
  const items: unknown[] = Array.isArray(parsed) ? parsed : [parsed];
  for (const item of items) {
    if (!isRecord(item) || typeof item['type'] !== 'string' || !isRecord(item['data'])) {
      out.errors.push(clientError('client_invalid_frame', 'server sent a frame without a string "type" and an object "data"'));
      continue;
    }
    const type = item['type'];
    if (!isEventType(type) && !(CONTROL_TYPES as readonly string[]).includes(type)) {
      out.unknown += 1;
      continue;
    }
    if (typeof item['timestamp'] !== 'string') item['timestamp'] = '';
    if (isEventType(type)) {
      const pos = item['position'];
      item['position'] = isRecord(pos) && typeof pos['offset'] === 'number' && typeof pos['epoch'] === 'string' ? pos : null;
      if (typeof item['id'] !== 'string') item['id'] = '';
      if (!isTopic(item['subscription_type'])) item['subscription_type'] = EVENT_TOPICS[type];
    }
    out.frames.push(item as unknown as ServerFrame);
  }
  return out;
}

// ---------------------------------------------------------------------------
// Compile-time checks: each interface is exactly what its schema describes.
// ---------------------------------------------------------------------------

type Equal<A, B> = (<G>() => G extends A ? 1 : 2) extends <G>() => G extends B ? 1 : 2 ? true : false;
type Expect<T extends true> = T;

/* eslint-disable @typescript-eslint/no-unused-vars */
export type _CheckSchemas = [
  Expect<Equal<PayloadFromSchema<'package_update'>, PackageUpdate>>,
  Expect<Equal<PayloadFromSchema<'anomaly_detected'>, AnomalyDetected>>,
  Expect<Equal<PayloadFromSchema<'dashboard_metrics'>, DashboardMetrics>>,
  Expect<Equal<PayloadFromSchema<'notification'>, Notification>>,
  Expect<Equal<PayloadFromSchema<'map_update'>, MapUpdate>>,
  Expect<Equal<PayloadFromSchema<'agent_activity'>, AgentActivity>>,
  Expect<Equal<PayloadFromSchema<'system_health'>, SystemHealth>>,
];
