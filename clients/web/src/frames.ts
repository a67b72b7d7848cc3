/**
 * The frames of the ClearPath Realtime WebSocket bridge, as TypeScript types.
 *
 * The payloads, enums, subscription types and their runtime schemas
 * (`PAYLOAD_SCHEMAS`) are generated from `protos/` by `scripts/gen_protos.py`
 * into `./generated/catalog.ts` and re-exported here, in their JSON form:
 * snake_case field names, enum values in lowercase with the enum prefix
 * stripped (`PACKAGE_STATUS_IN_TRANSIT` -> `"in_transit"`), timestamps as RFC
 * 3339 strings ending in `Z` (or `null` when unset), numbers as JSON numbers.
 * `make proto-check` fails when the generated file is stale, and
 * `test/frames.test.ts` checks it against the `.proto` files. The frame
 * envelopes, control frames and client messages below are written by hand.
 */

import {
  EVENT_TOPICS,
  TOPICS,
  type ENUMS,
  type EnumName,
  type EventPayloads,
  type EventType,
  type PAYLOAD_SCHEMAS,
  type StreamPosition,
  type Timestamp,
  type Topic,
} from './generated/catalog';

export * from './generated/catalog';

/** Returns true when `value` is one of the seven subscription types. */
export function isTopic(value: unknown): value is Topic {
  return typeof value === 'string' && (TOPICS as readonly string[]).includes(value);
}

// ---------------------------------------------------------------------------
// Schema helpers
// ---------------------------------------------------------------------------

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
export const GAP_REASONS = ['epoch_changed', 'history_trimmed', 'position_ahead', 'already_live'] as const;
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
/**
 * A map area in degrees: only map_updates inside it are sent. `west > east`
 * means the box crosses the antimeridian; points on the edges are inside.
 */
export interface BoundingBox {
  west: number;
  south: number;
  east: number;
  north: number;
}

/** The bridge's acknowledgement of a `viewport` message: the box now applied (null: whole world). */
export interface ViewportData {
  subscription_type: Topic;
  bbox: BoundingBox | null;
}

export type ViewportFrame = FrameEnvelope<'viewport', ViewportData>;
/**
 * Sent before the frames that follow a conflation: while the socket was behind,
 * `skipped` frames of a latest-state topic (map_updates per package,
 * dashboard_metrics, system_health per component) were superseded by newer
 * ones of the same key and not sent. The newest of every key still comes.
 */
export interface ConflatedData {
  subscription_type: Topic;
  skipped: number;
}
export type ConflatedFrame = FrameEnvelope<'conflated', ConflatedData>;
/**
 * Where a topic's stream went while the bridge's filters (the viewport, another
 * user's notifications) left its events out: every event of the topic that
 * follows comes after `position`, so a resume may start there (and stays within
 * the history). Sent only when no frame of the topic is queued before it, at
 * most once per ping interval or per 1000 events left out. Not a `ServerFrame`:
 * `decodeMessage` returns it apart (`DecodedMessage.positions`), and
 * `RealtimeClient` moves the topic's position with it instead of dispatching it.
 */
export interface PositionData {
  subscription_type: Topic;
  position: StreamPosition;
}
export type PositionFrame = FrameEnvelope<'position', PositionData>;
export type ControlFrame =
  | WelcomeFrame
  | SubscribedFrame
  | UnsubscribedFrame
  | PongFrame
  | ErrorFrame
  | RefreshedFrame
  | ViewportFrame
  | ConflatedFrame;
export type ControlType = ControlFrame['type'];

/** Any server->client frame. Narrow it on `type`. */
export type ServerFrame = AnyEventFrame | ControlFrame;
export type FrameType = ServerFrame['type'];
/** The frame of one type. */
export type FrameOf<T extends FrameType> = Extract<ServerFrame, { type: T }>;

export const CONTROL_TYPES: readonly ControlType[] = [
  'welcome',
  'subscribed',
  'unsubscribed',
  'pong',
  'error',
  'refreshed',
  'viewport',
  'conflated',
];

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
  /** `bbox`: map_updates only; the box its events must fall in (see `ViewportMessage`). */
  data: { subscription_type: Topic; since?: StreamPosition; bbox?: BoundingBox };
};
/** Moves the box of the map_updates subscription in place (null: whole world); answered by `viewport`. */
export type ViewportMessage = {
  type: 'viewport';
  data: { subscription_type: 'map_updates'; bbox: BoundingBox | null };
};
export type UnsubscribeMessage = { type: 'unsubscribe'; data: { subscription_type: Topic } };
export type PingMessage = { type: 'ping'; data: Record<string, never> };
/** Authenticates the connection: the first message on a socket when the client has a token. */
export type AuthMessage = { type: 'auth'; data: { token: string } };
/** Replaces the connection's token in place (same subject); answered by `refreshed`. */
export type RefreshMessage = { type: 'refresh'; data: { token: string } };
export type ClientMessage =
  | SubscribeMessage
  | UnsubscribeMessage
  | PingMessage
  | AuthMessage
  | RefreshMessage
  | ViewportMessage;

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
  /**
   * The `position` frames, in order. Each says no more than the frames of its
   * topic before it in the same message, so applying them after `frames` (forward
   * only) is what applying them in place would be.
   */
  positions: PositionFrame[];
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
  const out: DecodedMessage = { frames: [], errors: [], unknown: 0, positions: [] };
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
    if (type === 'position') {
      const data = item['data'] as Record<string, unknown>;
      const at = data['position'];
      if (isTopic(data['subscription_type']) && isRecord(at) && typeof at['offset'] === 'number' && typeof at['epoch'] === 'string') {
        out.positions.push(item as unknown as PositionFrame);
      } else {
        out.errors.push(clientError('client_invalid_frame', 'server sent a position frame without a subscription type and a position'));
      }
      continue;
    }
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
