// Generated from protos/ by scripts/gen_protos.py. Do not edit.
/**
 * The typed catalog of `clearpath.realtime.v1` for browsers: the payloads, enums and
 * subscription types in their JSON form (core/codec.py: snake_case fields, enum values
 * lower case without their prefix, timestamps RFC 3339 UTC strings or null, numbers
 * as numbers), with the comments of protos/ as doc comments. `CATALOG` is the JSON
 * `GET /ws/schema` serves with the default conflation keys (a bridge configured
 * otherwise says so there). Import it through `../frames`.
 */

// -----------------------------------------------------------------------------
// Subscription types and enums
// -----------------------------------------------------------------------------

/** Subscription types (proto enum `Topic`, without `unspecified` and internal topics). */
export const TOPICS = [
  'package_updates',
  'anomalies',
  'dashboard_metrics',
  'notifications',
  'map_updates',
  'agent_activity',
  'system_health',
] as const;
/** A subscription type. */
export type Topic = (typeof TOPICS)[number];

/**
 * Where a package is in its journey. (proto enum `PackageStatus`)
 *
 * - `unspecified`: Not a status: a package update without one is rejected on publish; a map update
 *   may leave it unset (status not known).
 * - `created`: Label created, not yet handed to a carrier.
 * - `in_transit`: Moving between distribution centers.
 * - `out_for_delivery`: On the vehicle for the last mile.
 * - `delivered`: Handed to the recipient.
 * - `delayed`: Behind its estimated delivery.
 * - `returned`: Delivery failed; on its way back to the sender.
 * - `lost`: Cannot be located.
 */
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

/**
 * How serious something is, in increasing order. (proto enum `Severity`)
 *
 * - `unspecified`: Not a severity; rejected on publish (and means "no minimum" in a filter).
 * - `low`: Worth knowing.
 * - `medium`: Worth acting on.
 * - `high`: Act soon.
 * - `critical`: Act now.
 */
export const SEVERITIES = ['unspecified', 'low', 'medium', 'high', 'critical'] as const;
export type Severity = (typeof SEVERITIES)[number];

/**
 * The kind of anomaly a detector found. (proto enum `AnomalyType`)
 *
 * - `unspecified`: Not an anomaly type; rejected on publish.
 * - `delayed_delivery`: The package will miss its estimated delivery.
 * - `route_deviation`: The package left its planned route.
 * - `missed_scan`: No scan for longer than expected.
 * - `temperature_excursion`: Temperature out of range for a cold-chain package.
 * - `damaged`: The package was reported damaged.
 * - `wrong_location`: A scan at an unexpected place.
 */
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

/**
 * The health of one component of the platform. (proto enum `HealthStatus`)
 *
 * - `unspecified`: Not a status; rejected on publish.
 * - `healthy`: Working normally.
 * - `degraded`: Working, but slow or partly failing.
 * - `down`: Not working.
 */
export const HEALTH_STATUSES = ['unspecified', 'healthy', 'degraded', 'down'] as const;
export type HealthStatus = (typeof HEALTH_STATUSES)[number];

/** Every enum of events.proto by its proto name, values in number order. */
export const ENUMS = {
  Topic: ['unspecified', ...TOPICS],
  PackageStatus: PACKAGE_STATUSES,
  Severity: SEVERITIES,
  AnomalyType: ANOMALY_TYPES,
  HealthStatus: HEALTH_STATUSES,
} as const;
export type EnumName = keyof typeof ENUMS;

/**
 * How a topic's events wait for a subscriber that is behind.
 *
 * - `urgent`: Never waits behind events of other classes in a subscriber's queue (the priority
 *   lane); every event, never conflated.
 * - `reliable`: Every event, in order; never conflated.
 * - `latest`: Latest state per conflation key: a subscriber that has fallen behind receives only
 *   the newest event of each key and is told how many it skipped; one that keeps up receives every
 *   event.
 */
export const DELIVERY_CLASSES = ['urgent', 'reliable', 'latest'] as const;
export type DeliveryClass = (typeof DELIVERY_CLASSES)[number];

/** Each subscription type's delivery class. */
export const TOPIC_DELIVERY = {
  package_updates: 'reliable',
  anomalies: 'urgent',
  dashboard_metrics: 'latest',
  notifications: 'urgent',
  map_updates: 'latest',
  agent_activity: 'reliable',
  system_health: 'latest',
} as const satisfies Record<Topic, DeliveryClass>;

// -----------------------------------------------------------------------------
// Payloads (proto messages)
// -----------------------------------------------------------------------------

/** RFC 3339 UTC timestamp ending in `Z`, e.g. `2024-01-15T10:30:00Z`. */
export type Timestamp = string;

/**
 * A package's status changed or it was scanned. (proto `PackageUpdate`; event type `package_update`
 * on `package_updates`)
 */
export interface PackageUpdate {
  /** The package's internal id. */
  package_id: string;
  /** The carrier's tracking number, e.g. PKG123456789. */
  tracking_number: string;
  /** The package's status after this update. */
  status: PackageStatus;
  /** Human-readable place of the last scan, e.g. "Chicago Distribution Center". */
  location: string;
  /** When the package is now expected to be delivered. */
  estimated_delivery: Timestamp | null;
  /** When the package was last scanned. */
  last_scan_time: Timestamp | null;
  /** The carrier moving the package, e.g. FedEx. */
  carrier: string;
}

/**
 * A detector found something wrong with a package. (proto `AnomalyDetected`; event type
 * `anomaly_detected` on `anomalies`)
 */
export interface AnomalyDetected {
  /** The package concerned. */
  package_id: string;
  /** What kind of anomaly it is. */
  anomaly_type: AnomalyType;
  /** How serious it is. */
  severity: Severity;
  /** What happened, for people, e.g. "Package delayed by 4 hours". */
  description: string;
  /** What the recovery agents should do, e.g. reroute_through_alternative_center. */
  recommended_action: string;
  /** The detector's confidence, from 0 to 1. */
  confidence_score: number;
  /** When the anomaly was detected. */
  detected_at: Timestamp | null;
}

/**
 * Aggregate figures of the network, for dashboards. (proto `DashboardMetrics`; event type
 * `dashboard_metrics` on `dashboard_metrics`)
 */
export interface DashboardMetrics {
  /** Packages known to the platform. */
  total_packages: number;
  /** Packages currently in transit. */
  in_transit: number;
  /** Packages delivered. */
  delivered: number;
  /** Packages currently delayed. */
  delayed: number;
  /** Anomalies currently open. */
  anomalies: number;
  /** Share of anomalies recovered, from 0 to 1. */
  recovery_rate: number;
  /** Mean delivery time in days. */
  avg_delivery_time: number;
}

/**
 * A message for people: to everyone, or to one user. (proto `Notification`; event type
 * `notification` on `notifications`)
 */
export interface Notification {
  /** The notification's own id. */
  notification_id: string;
  /** The user it is for; empty means every user. */
  user_id: string;
  /** One-line title. */
  title: string;
  /** The text. */
  message: string;
  /** How serious it is. */
  severity: Severity;
  /** The package it is about, if any. */
  package_id: string;
  /** Where the user can act on it (a path in the web app), if anywhere. */
  action_url: string;
}

/** A package or vehicle moved. (proto `MapUpdate`; event type `map_update` on `map_updates`) */
export interface MapUpdate {
  /** The package whose position this is. */
  package_id: string;
  /** The vehicle carrying it, if known. */
  vehicle_id: string;
  /** WGS 84 latitude in degrees, from -90 to 90. */
  latitude: number;
  /** WGS 84 longitude in degrees, from -180 to 180. */
  longitude: number;
  /** Direction of travel in degrees clockwise from north, from 0 to 360. */
  heading: number;
  /** Speed in km/h, not negative. */
  speed_kmh: number;
  /** The route being followed, if known. */
  route_id: string;
  /** The place it is heading to next. */
  next_stop: string;
  /** Package status at this position; may be unset (unspecified) when not known. */
  status: PackageStatus;
}

/**
 * An AI agent did something. (proto `AgentActivity`; event type `agent_activity` on
 * `agent_activity`)
 */
export interface AgentActivity {
  /** The agent's id, e.g. recovery-agent-2. */
  agent_id: string;
  /** The kind of agent, e.g. recovery, routing, customer_service. */
  agent_type: string;
  /** What it did, e.g. reroute_package. */
  action: string;
  /** What came of it, e.g. succeeded, failed, pending. */
  outcome: string;
  /** The package concerned, if any. */
  package_id: string;
  /** Free text for people. */
  details: string;
  /** How long the action took, in milliseconds. */
  duration_ms: number;
}

/**
 * A component reports its health. (proto `SystemHealth`; event type `system_health` on
 * `system_health`)
 */
export interface SystemHealth {
  /** The component, e.g. core, bridge, redis, routing-service. */
  component: string;
  /** Its status. */
  status: HealthStatus;
  /** CPU use in percent, from 0 to 100. */
  cpu_percent: number;
  /** Memory use in percent, from 0 to 100. */
  memory_percent: number;
  /** Median latency of its work in milliseconds. */
  latency_ms: number;
  /** Errors per minute. */
  error_rate: number;
  /** Free text for people. */
  message: string;
}

/**
 * Where it stands in its topic's stream; assigned by the core, ignored on publish. (proto
 * `StreamPosition`)
 */
export interface StreamPosition {
  /** The offset of the last event seen; the first event of an epoch has offset 1. */
  offset: number;
  /** The epoch the offset belongs to. */
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

/** Every event type, in topic order. */
export const EVENT_TYPES: EventType[] = [
  'package_update',
  'anomaly_detected',
  'dashboard_metrics',
  'notification',
  'map_update',
  'agent_activity',
  'system_health',
];

// -----------------------------------------------------------------------------
// Runtime schemas
// -----------------------------------------------------------------------------

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

// -----------------------------------------------------------------------------
// The catalog (GET /ws/schema)
// -----------------------------------------------------------------------------

/** A field of a payload or of the envelope, as `GET /ws/schema` describes it. */
export interface CatalogField {
  name: string;
  /** The proto field number; null for envelope fields the codec adds. */
  number: number | null;
  /** The JSON Schema type of the value. */
  json_type: 'string' | 'number' | 'integer' | 'boolean' | 'object';
  /** The proto type: a scalar, `google.protobuf.Timestamp`, or a key of `Catalog.enums`. */
  proto_type: string | null;
  /** `date-time` for RFC 3339 timestamps. */
  format: 'date-time' | null;
  /** The values an enum field may carry (`unspecified` only as an unset default). */
  enum: string[] | null;
  /** Whether the value may be null (unset timestamps). */
  nullable: boolean;
  /** Whether the key is always present. */
  required: boolean;
  description: string;
  /** The fields of an `object` field. */
  fields?: CatalogField[];
}

/** A subscription type in the catalog. */
export interface CatalogSubscriptionType {
  name: Topic;
  proto_name: string;
  number: number;
  event_type: EventType;
  delivery_class: DeliveryClass;
  /** Null: never conflated; else the payload fields naming one thing ([]: the whole topic). */
  conflation_key: string[] | null;
  description: string;
}

/** An event type in the catalog. */
export interface CatalogEventType {
  name: EventType;
  topic: Topic;
  message: string;
  description: string;
  fields: CatalogField[];
}

/** An enum in the catalog, values in number order. */
export interface CatalogEnum {
  description: string;
  values: { name: string; proto_name: string; number: number; description: string }[];
}

/** The body of `GET /ws/schema`. */
export interface Catalog {
  /** Changes only when a key is removed or changes meaning. */
  version: number;
  package: string;
  delivery_classes: Record<DeliveryClass, string>;
  subscription_types: CatalogSubscriptionType[];
  event_types: CatalogEventType[];
  enums: Record<EnumName, CatalogEnum>;
  /** The event frame around a payload. */
  envelope: { description: string; fields: CatalogField[] };
}

/** The catalog with the default conflation keys, as `GET /ws/schema` serves it. */
export const CATALOG: Catalog = {
  "version": 1,
  "package": "clearpath.realtime.v1",
  "delivery_classes": {
    "urgent": "Never waits behind events of other classes in a subscriber's queue (the priority lane); every event, never conflated.",
    "reliable": "Every event, in order; never conflated.",
    "latest": "Latest state per conflation key: a subscriber that has fallen behind receives only the newest event of each key and is told how many it skipped; one that keeps up receives every event."
  },
  "subscription_types": [
    {
      "name": "package_updates",
      "proto_name": "TOPIC_PACKAGE_UPDATES",
      "number": 1,
      "event_type": "package_update",
      "delivery_class": "reliable",
      "conflation_key": null,
      "description": "Package status changes (package_update events)."
    },
    {
      "name": "anomalies",
      "proto_name": "TOPIC_ANOMALIES",
      "number": 2,
      "event_type": "anomaly_detected",
      "delivery_class": "urgent",
      "conflation_key": null,
      "description": "Anomalies detected on packages (anomaly_detected events)."
    },
    {
      "name": "dashboard_metrics",
      "proto_name": "TOPIC_DASHBOARD_METRICS",
      "number": 3,
      "event_type": "dashboard_metrics",
      "delivery_class": "latest",
      "conflation_key": [],
      "description": "Aggregate figures for dashboards (dashboard_metrics events)."
    },
    {
      "name": "notifications",
      "proto_name": "TOPIC_NOTIFICATIONS",
      "number": 4,
      "event_type": "notification",
      "delivery_class": "urgent",
      "conflation_key": null,
      "description": "Messages for people, broadcast or to one user (notification events)."
    },
    {
      "name": "map_updates",
      "proto_name": "TOPIC_MAP_UPDATES",
      "number": 5,
      "event_type": "map_update",
      "delivery_class": "latest",
      "conflation_key": [
        "package_id",
        "vehicle_id"
      ],
      "description": "Positions of packages and vehicles (map_update events)."
    },
    {
      "name": "agent_activity",
      "proto_name": "TOPIC_AGENT_ACTIVITY",
      "number": 6,
      "event_type": "agent_activity",
      "delivery_class": "reliable",
      "conflation_key": null,
      "description": "What the AI agents are doing (agent_activity events)."
    },
    {
      "name": "system_health",
      "proto_name": "TOPIC_SYSTEM_HEALTH",
      "number": 7,
      "event_type": "system_health",
      "delivery_class": "latest",
      "conflation_key": [
        "component"
      ],
      "description": "Health of the platform's components (system_health events)."
    }
  ],
  "event_types": [
    {
      "name": "package_update",
      "topic": "package_updates",
      "message": "PackageUpdate",
      "description": "A package's status changed or it was scanned.",
      "fields": [
        {
          "name": "package_id",
          "number": 1,
          "json_type": "string",
          "proto_type": "string",
          "format": null,
          "enum": null,
          "nullable": false,
          "required": true,
          "description": "The package's internal id."
        },
        {
          "name": "tracking_number",
          "number": 2,
          "json_type": "string",
          "proto_type": "string",
          "format": null,
          "enum": null,
          "nullable": false,
          "required": true,
          "description": "The carrier's tracking number, e.g. PKG123456789."
        },
        {
          "name": "status",
          "number": 3,
          "json_type": "string",
          "proto_type": "PackageStatus",
          "format": null,
          "enum": [
            "unspecified",
            "created",
            "in_transit",
            "out_for_delivery",
            "delivered",
            "delayed",
            "returned",
            "lost"
          ],
          "nullable": false,
          "required": true,
          "description": "The package's status after this update."
        },
        {
          "name": "location",
          "number": 4,
          "json_type": "string",
          "proto_type": "string",
          "format": null,
          "enum": null,
          "nullable": false,
          "required": true,
          "description": "Human-readable place of the last scan, e.g. \"Chicago Distribution Center\"."
        },
        {
          "name": "estimated_delivery",
          "number": 5,
          "json_type": "string",
          "proto_type": "google.protobuf.Timestamp",
          "format": "date-time",
          "enum": null,
          "nullable": true,
          "required": true,
          "description": "When the package is now expected to be delivered."
        },
        {
          "name": "last_scan_time",
          "number": 6,
          "json_type": "string",
          "proto_type": "google.protobuf.Timestamp",
          "format": "date-time",
          "enum": null,
          "nullable": true,
          "required": true,
          "description": "When the package was last scanned."
        },
        {
          "name": "carrier",
          "number": 7,
          "json_type": "string",
          "proto_type": "string",
          "format": null,
          "enum": null,
          "nullable": false,
          "required": true,
          "description": "The carrier moving the package, e.g. FedEx."
        }
      ]
    },
    {
      "name": "anomaly_detected",
      "topic": "anomalies",
      "message": "AnomalyDetected",
      "description": "A detector found something wrong with a package.",
      "fields": [
        {
          "name": "package_id",
          "number": 1,
          "json_type": "string",
          "proto_type": "string",
          "format": null,
          "enum": null,
          "nullable": false,
          "required": true,
          "description": "The package concerned."
        },
        {
          "name": "anomaly_type",
          "number": 2,
          "json_type": "string",
          "proto_type": "AnomalyType",
          "format": null,
          "enum": [
            "unspecified",
            "delayed_delivery",
            "route_deviation",
            "missed_scan",
            "temperature_excursion",
            "damaged",
            "wrong_location"
          ],
          "nullable": false,
          "required": true,
          "description": "What kind of anomaly it is."
        },
        {
          "name": "severity",
          "number": 3,
          "json_type": "string",
          "proto_type": "Severity",
          "format": null,
          "enum": [
            "unspecified",
            "low",
            "medium",
            "high",
            "critical"
          ],
          "nullable": false,
          "required": true,
          "description": "How serious it is."
        },
        {
          "name": "description",
          "number": 4,
          "json_type": "string",
          "proto_type": "string",
          "format": null,
          "enum": null,
          "nullable": false,
          "required": true,
          "description": "What happened, for people, e.g. \"Package delayed by 4 hours\"."
        },
        {
          "name": "recommended_action",
          "number": 5,
          "json_type": "string",
          "proto_type": "string",
          "format": null,
          "enum": null,
          "nullable": false,
          "required": true,
          "description": "What the recovery agents should do, e.g. reroute_through_alternative_center."
        },
        {
          "name": "confidence_score",
          "number": 6,
          "json_type": "number",
          "proto_type": "double",
          "format": null,
          "enum": null,
          "nullable": false,
          "required": true,
          "description": "The detector's confidence, from 0 to 1."
        },
        {
          "name": "detected_at",
          "number": 7,
          "json_type": "string",
          "proto_type": "google.protobuf.Timestamp",
          "format": "date-time",
          "enum": null,
          "nullable": true,
          "required": true,
          "description": "When the anomaly was detected."
        }
      ]
    },
    {
      "name": "dashboard_metrics",
      "topic": "dashboard_metrics",
      "message": "DashboardMetrics",
      "description": "Aggregate figures of the network, for dashboards.",
      "fields": [
        {
          "name": "total_packages",
          "number": 1,
          "json_type": "integer",
          "proto_type": "uint32",
          "format": null,
          "enum": null,
          "nullable": false,
          "required": true,
          "description": "Packages known to the platform."
        },
        {
          "name": "in_transit",
          "number": 2,
          "json_type": "integer",
          "proto_type": "uint32",
          "format": null,
          "enum": null,
          "nullable": false,
          "required": true,
          "description": "Packages currently in transit."
        },
        {
          "name": "delivered",
          "number": 3,
          "json_type": "integer",
          "proto_type": "uint32",
          "format": null,
          "enum": null,
          "nullable": false,
          "required": true,
          "description": "Packages delivered."
        },
        {
          "name": "delayed",
          "number": 4,
          "json_type": "integer",
          "proto_type": "uint32",
          "format": null,
          "enum": null,
          "nullable": false,
          "required": true,
          "description": "Packages currently delayed."
        },
        {
          "name": "anomalies",
          "number": 5,
          "json_type": "integer",
          "proto_type": "uint32",
          "format": null,
          "enum": null,
          "nullable": false,
          "required": true,
          "description": "Anomalies currently open."
        },
        {
          "name": "recovery_rate",
          "number": 6,
          "json_type": "number",
          "proto_type": "double",
          "format": null,
          "enum": null,
          "nullable": false,
          "required": true,
          "description": "Share of anomalies recovered, from 0 to 1."
        },
        {
          "name": "avg_delivery_time",
          "number": 7,
          "json_type": "number",
          "proto_type": "double",
          "format": null,
          "enum": null,
          "nullable": false,
          "required": true,
          "description": "Mean delivery time in days."
        }
      ]
    },
    {
      "name": "notification",
      "topic": "notifications",
      "message": "Notification",
      "description": "A message for people: to everyone, or to one user.",
      "fields": [
        {
          "name": "notification_id",
          "number": 1,
          "json_type": "string",
          "proto_type": "string",
          "format": null,
          "enum": null,
          "nullable": false,
          "required": true,
          "description": "The notification's own id."
        },
        {
          "name": "user_id",
          "number": 2,
          "json_type": "string",
          "proto_type": "string",
          "format": null,
          "enum": null,
          "nullable": false,
          "required": true,
          "description": "The user it is for; empty means every user."
        },
        {
          "name": "title",
          "number": 3,
          "json_type": "string",
          "proto_type": "string",
          "format": null,
          "enum": null,
          "nullable": false,
          "required": true,
          "description": "One-line title."
        },
        {
          "name": "message",
          "number": 4,
          "json_type": "string",
          "proto_type": "string",
          "format": null,
          "enum": null,
          "nullable": false,
          "required": true,
          "description": "The text."
        },
        {
          "name": "severity",
          "number": 5,
          "json_type": "string",
          "proto_type": "Severity",
          "format": null,
          "enum": [
            "unspecified",
            "low",
            "medium",
            "high",
            "critical"
          ],
          "nullable": false,
          "required": true,
          "description": "How serious it is."
        },
        {
          "name": "package_id",
          "number": 6,
          "json_type": "string",
          "proto_type": "string",
          "format": null,
          "enum": null,
          "nullable": false,
          "required": true,
          "description": "The package it is about, if any."
        },
        {
          "name": "action_url",
          "number": 7,
          "json_type": "string",
          "proto_type": "string",
          "format": null,
          "enum": null,
          "nullable": false,
          "required": true,
          "description": "Where the user can act on it (a path in the web app), if anywhere."
        }
      ]
    },
    {
      "name": "map_update",
      "topic": "map_updates",
      "message": "MapUpdate",
      "description": "A package or vehicle moved.",
      "fields": [
        {
          "name": "package_id",
          "number": 1,
          "json_type": "string",
          "proto_type": "string",
          "format": null,
          "enum": null,
          "nullable": false,
          "required": true,
          "description": "The package whose position this is."
        },
        {
          "name": "vehicle_id",
          "number": 2,
          "json_type": "string",
          "proto_type": "string",
          "format": null,
          "enum": null,
          "nullable": false,
          "required": true,
          "description": "The vehicle carrying it, if known."
        },
        {
          "name": "latitude",
          "number": 3,
          "json_type": "number",
          "proto_type": "double",
          "format": null,
          "enum": null,
          "nullable": false,
          "required": true,
          "description": "WGS 84 latitude in degrees, from -90 to 90."
        },
        {
          "name": "longitude",
          "number": 4,
          "json_type": "number",
          "proto_type": "double",
          "format": null,
          "enum": null,
          "nullable": false,
          "required": true,
          "description": "WGS 84 longitude in degrees, from -180 to 180."
        },
        {
          "name": "heading",
          "number": 5,
          "json_type": "number",
          "proto_type": "double",
          "format": null,
          "enum": null,
          "nullable": false,
          "required": true,
          "description": "Direction of travel in degrees clockwise from north, from 0 to 360."
        },
        {
          "name": "speed_kmh",
          "number": 6,
          "json_type": "number",
          "proto_type": "double",
          "format": null,
          "enum": null,
          "nullable": false,
          "required": true,
          "description": "Speed in km/h, not negative."
        },
        {
          "name": "route_id",
          "number": 7,
          "json_type": "string",
          "proto_type": "string",
          "format": null,
          "enum": null,
          "nullable": false,
          "required": true,
          "description": "The route being followed, if known."
        },
        {
          "name": "next_stop",
          "number": 8,
          "json_type": "string",
          "proto_type": "string",
          "format": null,
          "enum": null,
          "nullable": false,
          "required": true,
          "description": "The place it is heading to next."
        },
        {
          "name": "status",
          "number": 9,
          "json_type": "string",
          "proto_type": "PackageStatus",
          "format": null,
          "enum": [
            "unspecified",
            "created",
            "in_transit",
            "out_for_delivery",
            "delivered",
            "delayed",
            "returned",
            "lost"
          ],
          "nullable": false,
          "required": true,
          "description": "Package status at this position; may be unset (unspecified) when not known."
        }
      ]
    },
    {
      "name": "agent_activity",
      "topic": "agent_activity",
      "message": "AgentActivity",
      "description": "An AI agent did something.",
      "fields": [
        {
          "name": "agent_id",
          "number": 1,
          "json_type": "string",
          "proto_type": "string",
          "format": null,
          "enum": null,
          "nullable": false,
          "required": true,
          "description": "The agent's id, e.g. recovery-agent-2."
        },
        {
          "name": "agent_type",
          "number": 2,
          "json_type": "string",
          "proto_type": "string",
          "format": null,
          "enum": null,
          "nullable": false,
          "required": true,
          "description": "The kind of agent, e.g. recovery, routing, customer_service."
        },
        {
          "name": "action",
          "number": 3,
          "json_type": "string",
          "proto_type": "string",
          "format": null,
          "enum": null,
          "nullable": false,
          "required": true,
          "description": "What it did, e.g. reroute_package."
        },
        {
          "name": "outcome",
          "number": 4,
          "json_type": "string",
          "proto_type": "string",
          "format": null,
          "enum": null,
          "nullable": false,
          "required": true,
          "description": "What came of it, e.g. succeeded, failed, pending."
        },
        {
          "name": "package_id",
          "number": 5,
          "json_type": "string",
          "proto_type": "string",
          "format": null,
          "enum": null,
          "nullable": false,
          "required": true,
          "description": "The package concerned, if any."
        },
        {
          "name": "details",
          "number": 6,
          "json_type": "string",
          "proto_type": "string",
          "format": null,
          "enum": null,
          "nullable": false,
          "required": true,
          "description": "Free text for people."
        },
        {
          "name": "duration_ms",
          "number": 7,
          "json_type": "integer",
          "proto_type": "uint32",
          "format": null,
          "enum": null,
          "nullable": false,
          "required": true,
          "description": "How long the action took, in milliseconds."
        }
      ]
    },
    {
      "name": "system_health",
      "topic": "system_health",
      "message": "SystemHealth",
      "description": "A component reports its health.",
      "fields": [
        {
          "name": "component",
          "number": 1,
          "json_type": "string",
          "proto_type": "string",
          "format": null,
          "enum": null,
          "nullable": false,
          "required": true,
          "description": "The component, e.g. core, bridge, redis, routing-service."
        },
        {
          "name": "status",
          "number": 2,
          "json_type": "string",
          "proto_type": "HealthStatus",
          "format": null,
          "enum": [
            "unspecified",
            "healthy",
            "degraded",
            "down"
          ],
          "nullable": false,
          "required": true,
          "description": "Its status."
        },
        {
          "name": "cpu_percent",
          "number": 3,
          "json_type": "number",
          "proto_type": "double",
          "format": null,
          "enum": null,
          "nullable": false,
          "required": true,
          "description": "CPU use in percent, from 0 to 100."
        },
        {
          "name": "memory_percent",
          "number": 4,
          "json_type": "number",
          "proto_type": "double",
          "format": null,
          "enum": null,
          "nullable": false,
          "required": true,
          "description": "Memory use in percent, from 0 to 100."
        },
        {
          "name": "latency_ms",
          "number": 5,
          "json_type": "number",
          "proto_type": "double",
          "format": null,
          "enum": null,
          "nullable": false,
          "required": true,
          "description": "Median latency of its work in milliseconds."
        },
        {
          "name": "error_rate",
          "number": 6,
          "json_type": "number",
          "proto_type": "double",
          "format": null,
          "enum": null,
          "nullable": false,
          "required": true,
          "description": "Errors per minute."
        },
        {
          "name": "message",
          "number": 7,
          "json_type": "string",
          "proto_type": "string",
          "format": null,
          "enum": null,
          "nullable": false,
          "required": true,
          "description": "Free text for people."
        }
      ]
    }
  ],
  "enums": {
    "Topic": {
      "description": "A subscription type: the stream an event is published on. Each event type belongs to exactly one topic.",
      "values": [
        {
          "name": "unspecified",
          "proto_name": "TOPIC_UNSPECIFIED",
          "number": 0,
          "description": "Not a topic; rejected wherever a topic is required."
        },
        {
          "name": "package_updates",
          "proto_name": "TOPIC_PACKAGE_UPDATES",
          "number": 1,
          "description": "Package status changes (package_update events)."
        },
        {
          "name": "anomalies",
          "proto_name": "TOPIC_ANOMALIES",
          "number": 2,
          "description": "Anomalies detected on packages (anomaly_detected events)."
        },
        {
          "name": "dashboard_metrics",
          "proto_name": "TOPIC_DASHBOARD_METRICS",
          "number": 3,
          "description": "Aggregate figures for dashboards (dashboard_metrics events)."
        },
        {
          "name": "notifications",
          "proto_name": "TOPIC_NOTIFICATIONS",
          "number": 4,
          "description": "Messages for people, broadcast or to one user (notification events)."
        },
        {
          "name": "map_updates",
          "proto_name": "TOPIC_MAP_UPDATES",
          "number": 5,
          "description": "Positions of packages and vehicles (map_update events)."
        },
        {
          "name": "agent_activity",
          "proto_name": "TOPIC_AGENT_ACTIVITY",
          "number": 6,
          "description": "What the AI agents are doing (agent_activity events)."
        },
        {
          "name": "system_health",
          "proto_name": "TOPIC_SYSTEM_HEALTH",
          "number": 7,
          "description": "Health of the platform's components (system_health events)."
        }
      ]
    },
    "PackageStatus": {
      "description": "Where a package is in its journey.",
      "values": [
        {
          "name": "unspecified",
          "proto_name": "PACKAGE_STATUS_UNSPECIFIED",
          "number": 0,
          "description": "Not a status: a package update without one is rejected on publish; a map update may leave it unset (status not known)."
        },
        {
          "name": "created",
          "proto_name": "PACKAGE_STATUS_CREATED",
          "number": 1,
          "description": "Label created, not yet handed to a carrier."
        },
        {
          "name": "in_transit",
          "proto_name": "PACKAGE_STATUS_IN_TRANSIT",
          "number": 2,
          "description": "Moving between distribution centers."
        },
        {
          "name": "out_for_delivery",
          "proto_name": "PACKAGE_STATUS_OUT_FOR_DELIVERY",
          "number": 3,
          "description": "On the vehicle for the last mile."
        },
        {
          "name": "delivered",
          "proto_name": "PACKAGE_STATUS_DELIVERED",
          "number": 4,
          "description": "Handed to the recipient."
        },
        {
          "name": "delayed",
          "proto_name": "PACKAGE_STATUS_DELAYED",
          "number": 5,
          "description": "Behind its estimated delivery."
        },
        {
          "name": "returned",
          "proto_name": "PACKAGE_STATUS_RETURNED",
          "number": 6,
          "description": "Delivery failed; on its way back to the sender."
        },
        {
          "name": "lost",
          "proto_name": "PACKAGE_STATUS_LOST",
          "number": 7,
          "description": "Cannot be located."
        }
      ]
    },
    "Severity": {
      "description": "How serious something is, in increasing order.",
      "values": [
        {
          "name": "unspecified",
          "proto_name": "SEVERITY_UNSPECIFIED",
          "number": 0,
          "description": "Not a severity; rejected on publish (and means \"no minimum\" in a filter)."
        },
        {
          "name": "low",
          "proto_name": "SEVERITY_LOW",
          "number": 1,
          "description": "Worth knowing."
        },
        {
          "name": "medium",
          "proto_name": "SEVERITY_MEDIUM",
          "number": 2,
          "description": "Worth acting on."
        },
        {
          "name": "high",
          "proto_name": "SEVERITY_HIGH",
          "number": 3,
          "description": "Act soon."
        },
        {
          "name": "critical",
          "proto_name": "SEVERITY_CRITICAL",
          "number": 4,
          "description": "Act now."
        }
      ]
    },
    "AnomalyType": {
      "description": "The kind of anomaly a detector found.",
      "values": [
        {
          "name": "unspecified",
          "proto_name": "ANOMALY_TYPE_UNSPECIFIED",
          "number": 0,
          "description": "Not an anomaly type; rejected on publish."
        },
        {
          "name": "delayed_delivery",
          "proto_name": "ANOMALY_TYPE_DELAYED_DELIVERY",
          "number": 1,
          "description": "The package will miss its estimated delivery."
        },
        {
          "name": "route_deviation",
          "proto_name": "ANOMALY_TYPE_ROUTE_DEVIATION",
          "number": 2,
          "description": "The package left its planned route."
        },
        {
          "name": "missed_scan",
          "proto_name": "ANOMALY_TYPE_MISSED_SCAN",
          "number": 3,
          "description": "No scan for longer than expected."
        },
        {
          "name": "temperature_excursion",
          "proto_name": "ANOMALY_TYPE_TEMPERATURE_EXCURSION",
          "number": 4,
          "description": "Temperature out of range for a cold-chain package."
        },
        {
          "name": "damaged",
          "proto_name": "ANOMALY_TYPE_DAMAGED",
          "number": 5,
          "description": "The package was reported damaged."
        },
        {
          "name": "wrong_location",
          "proto_name": "ANOMALY_TYPE_WRONG_LOCATION",
          "number": 6,
          "description": "A scan at an unexpected place."
        }
      ]
    },
    "HealthStatus": {
      "description": "The health of one component of the platform.",
      "values": [
        {
          "name": "unspecified",
          "proto_name": "HEALTH_STATUS_UNSPECIFIED",
          "number": 0,
          "description": "Not a status; rejected on publish."
        },
        {
          "name": "healthy",
          "proto_name": "HEALTH_STATUS_HEALTHY",
          "number": 1,
          "description": "Working normally."
        },
        {
          "name": "degraded",
          "proto_name": "HEALTH_STATUS_DEGRADED",
          "number": 2,
          "description": "Working, but slow or partly failing."
        },
        {
          "name": "down",
          "proto_name": "HEALTH_STATUS_DOWN",
          "number": 3,
          "description": "Not working."
        }
      ]
    }
  },
  "envelope": {
    "description": "Every event frame: the event type, its topic and position around the payload in data. published_at and traceparent are present only when the event has them.",
    "fields": [
      {
        "name": "type",
        "number": null,
        "json_type": "string",
        "proto_type": null,
        "format": null,
        "enum": [
          "package_update",
          "anomaly_detected",
          "dashboard_metrics",
          "notification",
          "map_update",
          "agent_activity",
          "system_health"
        ],
        "nullable": false,
        "required": true,
        "description": "The event type; names the payload in data."
      },
      {
        "name": "subscription_type",
        "number": null,
        "json_type": "string",
        "proto_type": null,
        "format": null,
        "enum": [
          "package_updates",
          "anomalies",
          "dashboard_metrics",
          "notifications",
          "map_updates",
          "agent_activity",
          "system_health"
        ],
        "nullable": false,
        "required": true,
        "description": "The topic the event was published on."
      },
      {
        "name": "id",
        "number": 1,
        "json_type": "string",
        "proto_type": "string",
        "format": null,
        "enum": null,
        "nullable": false,
        "required": true,
        "description": "Unique id, assigned by the core on publish when empty."
      },
      {
        "name": "position",
        "number": 4,
        "json_type": "object",
        "proto_type": "StreamPosition",
        "format": null,
        "enum": null,
        "nullable": false,
        "required": true,
        "description": "Where it stands in its topic's stream; assigned by the core, ignored on publish.",
        "fields": [
          {
            "name": "offset",
            "number": 1,
            "json_type": "integer",
            "proto_type": "uint64",
            "format": null,
            "enum": null,
            "nullable": false,
            "required": true,
            "description": "The offset of the last event seen; the first event of an epoch has offset 1."
          },
          {
            "name": "epoch",
            "number": 2,
            "json_type": "string",
            "proto_type": "string",
            "format": null,
            "enum": null,
            "nullable": false,
            "required": true,
            "description": "The epoch the offset belongs to."
          }
        ]
      },
      {
        "name": "data",
        "number": null,
        "json_type": "object",
        "proto_type": null,
        "format": null,
        "enum": null,
        "nullable": false,
        "required": true,
        "description": "The payload: the fields of the event type."
      },
      {
        "name": "timestamp",
        "number": 3,
        "json_type": "string",
        "proto_type": "google.protobuf.Timestamp",
        "format": "date-time",
        "enum": null,
        "nullable": false,
        "required": true,
        "description": "When the event happened; set by the core on publish when absent."
      },
      {
        "name": "published_at",
        "number": 5,
        "json_type": "string",
        "proto_type": "google.protobuf.Timestamp",
        "format": "date-time",
        "enum": null,
        "nullable": false,
        "required": false,
        "description": "When the core accepted it; assigned by the core, ignored on publish. Delivery latency is measured from here."
      },
      {
        "name": "traceparent",
        "number": 6,
        "json_type": "string",
        "proto_type": "string",
        "format": null,
        "enum": null,
        "nullable": false,
        "required": false,
        "description": "W3C trace context (traceparent) of the publishing call, when it carried one; taken from the Publish metadata, so a trace continues to every receiver."
      }
    ]
  }
};
