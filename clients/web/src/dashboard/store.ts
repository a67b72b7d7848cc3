/**
 * The dashboard's state, and how a batch of frames changes it. Pure: the
 * React layer collects frames and applies them here a few times a second.
 * Every collection is bounded, so a busy stream costs the page the same
 * memory after an hour as after a minute.
 */

import type {
  AgentActivity,
  AnomalyDetected,
  AnyEventFrame,
  BoundingBox,
  DashboardMetrics,
  Notification,
  PackageStatus,
  ServerFrame,
  SystemHealth,
  Topic,
} from '../frames';
import { NO_LATENCY, latencyStats, rollWindow, type LatencySample, type LatencyStats } from './latency';

export const LIMITS = {
  packages: 200,
  mapPoints: 300,
  anomalies: 50,
  notifications: 30,
  activity: 30,
  log: 200,
} as const;

export interface PackageRow {
  package_id: string;
  tracking_number: string;
  status: PackageStatus;
  location: string;
  carrier: string;
  estimated_delivery: string | null;
  last_scan_time: string | null;
  /** Event timestamp of the last update. */
  updated_at: string;
  /** How many updates this row has had. */
  updates: number;
  /** Recency, for eviction: the `seq` of the batch that last touched it. */
  seq: number;
}

export interface MapPoint {
  package_id: string;
  vehicle_id: string;
  latitude: number;
  longitude: number;
  heading: number;
  speed_kmh: number;
  next_stop: string;
  status: PackageStatus;
  seq: number;
}

export interface Stamped<T> {
  id: string;
  timestamp: string;
  data: T;
}

export interface LogEntry {
  /** Unique, increasing. */
  n: number;
  type: ServerFrame['type'];
  topic: Topic | null;
  timestamp: string;
  offset: number | null;
  summary: string;
}

export interface DashboardState {
  /** Increases with every applied batch. */
  seq: number;
  metrics: DashboardMetrics | null;
  metricsAt: string | null;
  /** Newest first. */
  anomalies: Stamped<AnomalyDetected>[];
  /** Row order: first seen on top; rows are updated where they are. */
  packageOrder: string[];
  packages: Record<string, PackageRow>;
  points: Record<string, MapPoint>;
  notifications: Stamped<Notification>[];
  activity: Stamped<AgentActivity>[];
  health: Record<string, Stamped<SystemHealth>>;
  /** Newest first. */
  log: LogEntry[];
  logCount: number;
  eventCount: number;
  errorCount: number;
  lastError: { code: string; message: string; timestamp: string } | null;
  /** (time ms, events) of recent batches, for the rate. */
  recent: [number, number][];
  eventsPerSecond: number;
  /** Delivery latency samples of the last events (see latency.ts), oldest first. */
  latency: readonly LatencySample[];
  latencyStats: LatencyStats;
  /** The map_updates box the bridge last confirmed (a `viewport` frame); null: the whole world. */
  viewport: BoundingBox | null;
}

export function initialState(): DashboardState {
  return {
    seq: 0,
    metrics: null,
    metricsAt: null,
    anomalies: [],
    packageOrder: [],
    packages: {},
    points: {},
    notifications: [],
    activity: [],
    health: {},
    log: [],
    logCount: 0,
    eventCount: 0,
    errorCount: 0,
    lastError: null,
    recent: [],
    eventsPerSecond: 0,
    latency: [],
    latencyStats: NO_LATENCY,
    viewport: null,
  };
}

const RATE_WINDOW_MS = 5_000;

/** One line for the message log. */
export function summarize(frame: ServerFrame): string {
  switch (frame.type) {
    case 'package_update':
      return `${frame.data.tracking_number || frame.data.package_id} → ${frame.data.status}${frame.data.location ? ` @ ${frame.data.location}` : ''}`;
    case 'anomaly_detected':
      return `${frame.data.severity.toUpperCase()} ${frame.data.anomaly_type} on ${frame.data.package_id}`;
    case 'dashboard_metrics':
      return `${frame.data.total_packages} packages, ${frame.data.in_transit} in transit, ${frame.data.delayed} delayed`;
    case 'notification':
      return `[${frame.data.severity}] ${frame.data.title}`;
    case 'map_update':
      return `${frame.data.package_id} at ${frame.data.latitude.toFixed(3)}, ${frame.data.longitude.toFixed(3)}`;
    case 'agent_activity':
      return `${frame.data.agent_id} ${frame.data.action}: ${frame.data.outcome}`;
    case 'system_health':
      return `${frame.data.component} ${frame.data.status}`;
    case 'welcome':
      return `connection ${frame.data.connection_id} on ${frame.data.endpoint}; subscribed: ${frame.data.subscriptions.join(', ') || 'none'}`;
    case 'subscribed':
      return `subscribed ${frame.data.subscription_type}${frame.data.recovered ? '' : ` (history lost: ${frame.data.reason ?? 'not recovered'})`}`;
    case 'unsubscribed':
      return `unsubscribed ${frame.data.subscription_type}`;
    case 'pong':
      return 'pong';
    case 'error':
      return `${frame.data.code}: ${frame.data.message}`;
    case 'refreshed':
      return 'token refreshed';
    case 'viewport': {
      const b = frame.data.bbox;
      return `${frame.data.subscription_type} area: ${b ? `${b.west}, ${b.south} to ${b.east}, ${b.north}` : 'whole world'}`;
    }
    case 'conflated':
      return `${frame.data.subscription_type}: ${frame.data.skipped} superseded events skipped (behind; the latest of each follows)`;
  }
}

function pushBounded<T>(list: T[], newestFirst: T[], limit: number): T[] {
  if (newestFirst.length === 0) return list;
  return newestFirst.concat(list).slice(0, limit);
}

/**
 * Applies a batch of frames, oldest first, and the latency samples taken as
 * they arrived; returns a new state (unchanged parts shared).
 */
export function applyFrames(
  state: DashboardState,
  frames: readonly ServerFrame[],
  nowMs: number,
  latency: readonly LatencySample[] = [],
): DashboardState {
  const seq = state.seq + 1;
  const next: DashboardState = { ...state, seq };
  const newLog: LogEntry[] = [];
  const newAnomalies: Stamped<AnomalyDetected>[] = [];
  const newNotifications: Stamped<Notification>[] = [];
  const newActivity: Stamped<AgentActivity>[] = [];
  let packages: Record<string, PackageRow> | null = null;
  let order: string[] | null = null;
  let points: Record<string, MapPoint> | null = null;
  let health: Record<string, Stamped<SystemHealth>> | null = null;
  let events = 0;
  let logN = state.logCount;

  for (const frame of frames) {
    if (frame.type === 'pong') continue;
    logN += 1;
    const isEvent = 'subscription_type' in frame;
    newLog.push({
      n: logN,
      type: frame.type,
      topic: isEvent ? (frame as AnyEventFrame).subscription_type : null,
      timestamp: frame.timestamp,
      offset: isEvent ? ((frame as AnyEventFrame).position?.offset ?? null) : null,
      summary: summarize(frame),
    });
    if (isEvent) events += 1;
    switch (frame.type) {
      case 'dashboard_metrics':
        next.metrics = frame.data;
        next.metricsAt = frame.timestamp;
        break;
      case 'anomaly_detected':
        newAnomalies.push({ id: frame.id, timestamp: frame.timestamp, data: frame.data });
        break;
      case 'notification':
        newNotifications.push({ id: frame.id, timestamp: frame.timestamp, data: frame.data });
        break;
      case 'agent_activity':
        newActivity.push({ id: frame.id, timestamp: frame.timestamp, data: frame.data });
        break;
      case 'system_health':
        health ??= { ...state.health };
        health[frame.data.component] = { id: frame.id, timestamp: frame.timestamp, data: frame.data };
        break;
      case 'package_update': {
        const d = frame.data;
        if (!d.package_id) break;
        packages ??= { ...state.packages };
        order ??= state.packageOrder;
        const prev = packages[d.package_id];
        if (!prev) order = [d.package_id, ...order];
        packages[d.package_id] = {
          package_id: d.package_id,
          tracking_number: d.tracking_number,
          status: d.status,
          location: d.location,
          carrier: d.carrier,
          estimated_delivery: d.estimated_delivery,
          last_scan_time: d.last_scan_time,
          updated_at: frame.timestamp,
          updates: (prev?.updates ?? 0) + 1,
          seq,
        };
        break;
      }
      case 'map_update': {
        const d = frame.data;
        if (!d.package_id || !Number.isFinite(d.latitude) || !Number.isFinite(d.longitude)) break;
        points ??= { ...state.points };
        points[d.package_id] = {
          package_id: d.package_id,
          vehicle_id: d.vehicle_id,
          latitude: d.latitude,
          longitude: d.longitude,
          heading: d.heading,
          speed_kmh: d.speed_kmh,
          next_stop: d.next_stop,
          status: d.status,
          seq,
        };
        break;
      }
      case 'viewport':
        if (frame.data.subscription_type === 'map_updates') next.viewport = frame.data.bbox;
        break;
      case 'error':
        next.errorCount += 1;
        next.lastError = { code: frame.data.code, message: frame.data.message, timestamp: frame.timestamp };
        break;
      default:
        break;
    }
  }

  if (packages && order) {
    if (order.length > LIMITS.packages) {
      // Evict the rows updated longest ago; keep the others where they are.
      const keep = new Set(
        [...order].sort((a, b) => (packages![b]?.seq ?? 0) - (packages![a]?.seq ?? 0)).slice(0, LIMITS.packages),
      );
      order = order.filter((id) => {
        if (keep.has(id)) return true;
        delete packages![id];
        return false;
      });
    }
    next.packages = packages;
    next.packageOrder = order;
  }
  if (points) {
    const ids = Object.keys(points);
    if (ids.length > LIMITS.mapPoints) {
      ids.sort((a, b) => points![a]!.seq - points![b]!.seq);
      for (const id of ids.slice(0, ids.length - LIMITS.mapPoints)) delete points[id];
    }
    next.points = points;
  }
  if (health) next.health = health;
  next.anomalies = pushBounded(state.anomalies, newAnomalies.reverse(), LIMITS.anomalies);
  next.notifications = pushBounded(state.notifications, newNotifications.reverse(), LIMITS.notifications);
  next.activity = pushBounded(state.activity, newActivity.reverse(), LIMITS.activity);
  next.log = pushBounded(state.log, newLog.reverse(), LIMITS.log);
  next.logCount = logN;
  next.eventCount = state.eventCount + events;

  const recent = state.recent.filter(([t]) => nowMs - t < RATE_WINDOW_MS);
  recent.push([nowMs, events]);
  next.recent = recent;
  const span = Math.max(1_000, nowMs - (recent[0]?.[0] ?? nowMs));
  next.eventsPerSecond = (recent.reduce((sum, [, n]) => sum + n, 0) * 1_000) / span;

  next.latency = rollWindow(state.latency, latency, nowMs);
  if (next.latency !== state.latency) next.latencyStats = latencyStats(next.latency);
  return next;
}
