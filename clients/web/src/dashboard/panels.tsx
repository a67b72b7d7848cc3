import { memo } from 'react';
import type { ConnectionStatus } from '../client';
import { TOPICS, type AgentActivity, type GapReason, type AnomalyDetected, type DashboardMetrics, type Notification, type SystemHealth, type Topic } from '../frames';
import type { Gap } from '../positions';
import { connectionLabel, formatInt, formatPercent, formatTime, humanize } from './format';
import type { LogEntry, Stamped } from './store';

export function ConnectionBar(props: {
  status: ConnectionStatus;
  endpoint: string;
  eventsPerSecond: number;
  eventCount: number;
  onRetry: () => void;
}) {
  const { status } = props;
  const canRetry = status.state === 'failed' || status.state === 'closed';
  return (
    <div className="conn">
      <span
        className={`badge badge-${status.state}`}
        data-testid="connection-state"
        data-state={status.state}
        data-attempt={status.attempt}
        role="status"
        aria-live="polite"
      >
        <span className="dot" />
        {connectionLabel(status)}
      </span>
      <code className="endpoint" data-testid="endpoint" title="WebSocket endpoint">
        {props.endpoint}
      </code>
      <span className="rate" data-testid="event-rate" title="events per second (last 5 s)">
        {props.eventsPerSecond.toFixed(1)} ev/s · {formatInt(props.eventCount)} events
      </span>
      {canRetry && (
        <button type="button" className="btn" data-testid="retry-button" onClick={props.onRetry}>
          Reconnect
        </button>
      )}
      {status.lastError && status.state !== 'connected' && (
        <span className="conn-error" data-testid="connection-error">
          {status.lastError}
        </span>
      )}
    </div>
  );
}

export function TopicToggles(props: {
  subscriptions: readonly Topic[];
  confirmed: readonly Topic[];
  onToggle: (topic: Topic, on: boolean) => void;
}) {
  return (
    <fieldset className="topics" data-testid="topic-toggles">
      <legend>Subscriptions</legend>
      {TOPICS.map((topic) => {
        const on = props.subscriptions.includes(topic);
        const confirmed = props.confirmed.includes(topic);
        return (
          <label key={topic} className={`topic ${on ? 'on' : ''} ${on && !confirmed ? 'pending' : ''}`}>
            <input
              type="checkbox"
              checked={on}
              data-testid={`topic-toggle-${topic}`}
              data-confirmed={String(confirmed)}
              onChange={(e) => props.onToggle(topic, e.currentTarget.checked)}
            />
            {humanize(topic)}
          </label>
        );
      })}
    </fieldset>
  );
}

const METRICS: { key: keyof DashboardMetrics; label: string; format: (n: number) => string }[] = [
  { key: 'total_packages', label: 'Total packages', format: formatInt },
  { key: 'in_transit', label: 'In transit', format: formatInt },
  { key: 'delivered', label: 'Delivered', format: formatInt },
  { key: 'delayed', label: 'Delayed', format: formatInt },
  { key: 'anomalies', label: 'Open anomalies', format: formatInt },
  { key: 'recovery_rate', label: 'Recovery rate', format: formatPercent },
  { key: 'avg_delivery_time', label: 'Avg delivery', format: (n) => `${n.toFixed(1)} d` },
];

export const MetricCards = memo(function MetricCards(props: { metrics: DashboardMetrics | null; at: string | null }) {
  return (
    <section className="metrics" data-testid="metrics" aria-label="Dashboard metrics">
      {METRICS.map((m) => {
        const value = props.metrics?.[m.key];
        return (
          <div key={m.key} className={`card card-${m.key}`} data-testid={`metric-${m.key}`} data-value={value ?? ''}>
            <div className="card-label">{m.label}</div>
            <div className="card-value">{value === undefined ? '—' : m.format(value)}</div>
          </div>
        );
      })}
      <div className="metrics-at muted">{props.at ? `as of ${formatTime(props.at)} UTC` : 'waiting for metrics'}</div>
    </section>
  );
});

export const AnomaliesPanel = memo(function AnomaliesPanel(props: { anomalies: readonly Stamped<AnomalyDetected>[] }) {
  return (
    <section className="panel panel-anomalies" data-testid="anomalies-panel" data-count={props.anomalies.length}>
      <header className="panel-head">
        <h2>Anomalies</h2>
        <span className="muted">{props.anomalies.length}</span>
      </header>
      <ul className="list">
        {props.anomalies.map(({ id, timestamp, data }, i) => (
          <li
            key={id || `${timestamp}-${i}`}
            className={`anomaly anomaly-${data.severity}`}
            data-testid="anomaly-row"
            data-package-id={data.package_id}
            data-severity={data.severity}
          >
            <div className="row-top">
              <span className={`sev sev-${data.severity}`}>{data.severity}</span>
              <strong>{humanize(data.anomaly_type)}</strong>
              <span className="mono muted">{data.package_id}</span>
              <span className="muted right">{formatTime(data.detected_at ?? timestamp)}</span>
            </div>
            <div className="desc">{data.description}</div>
            <div className="action">
              → <span data-testid="recommended-action">{humanize(data.recommended_action) || 'no action'}</span>
              <span className="muted"> · confidence {formatPercent(data.confidence_score)}</span>
            </div>
          </li>
        ))}
      </ul>
      {props.anomalies.length === 0 && <p className="empty">No anomalies.</p>}
    </section>
  );
});

export const HealthPanel = memo(function HealthPanel(props: { health: Readonly<Record<string, Stamped<SystemHealth>>> }) {
  const rows = Object.values(props.health).sort((a, b) => a.data.component.localeCompare(b.data.component));
  return (
    <section className="panel panel-health" data-testid="health-panel">
      <header className="panel-head">
        <h2>System health</h2>
      </header>
      <ul className="list compact">
        {rows.map(({ data }) => (
          <li key={data.component} data-testid="health-row" data-component={data.component} data-status={data.status}>
            <span className={`health health-${data.status}`}>{data.status}</span>
            <strong>{data.component}</strong>
            <span className="muted right">
              cpu {data.cpu_percent.toFixed(0)}% · mem {data.memory_percent.toFixed(0)}% · {data.latency_ms.toFixed(0)} ms
            </span>
          </li>
        ))}
      </ul>
      {rows.length === 0 && <p className="empty">No health reports.</p>}
    </section>
  );
});

export const ActivityPanel = memo(function ActivityPanel(props: { activity: readonly Stamped<AgentActivity>[] }) {
  return (
    <section className="panel panel-activity" data-testid="activity-panel">
      <header className="panel-head">
        <h2>Agent activity</h2>
      </header>
      <ul className="list compact">
        {props.activity.map(({ id, timestamp, data }, i) => (
          <li key={id || `${timestamp}-${i}`} data-testid="activity-row">
            <span className={`outcome outcome-${data.outcome}`}>{data.outcome || '—'}</span>
            <strong>{data.agent_id}</strong> <span>{humanize(data.action)}</span>
            {data.package_id && <span className="mono muted"> {data.package_id}</span>}
            <span className="muted right">{data.duration_ms} ms</span>
          </li>
        ))}
      </ul>
      {props.activity.length === 0 && <p className="empty">No agent activity.</p>}
    </section>
  );
});

export const NotificationsPanel = memo(function NotificationsPanel(props: { notifications: readonly Stamped<Notification>[] }) {
  return (
    <section className="panel panel-notifications" data-testid="notifications-panel">
      <header className="panel-head">
        <h2>Notifications</h2>
      </header>
      <ul className="list compact">
        {props.notifications.map(({ id, timestamp, data }, i) => (
          <li key={data.notification_id || id || `${timestamp}-${i}`} data-testid="notification-row">
            <span className={`sev sev-${data.severity}`}>{data.severity}</span>
            <strong>{data.title}</strong> <span className="muted">{data.message}</span>
          </li>
        ))}
      </ul>
      {props.notifications.length === 0 && <p className="empty">No notifications.</p>}
    </section>
  );
});

const LogLine = memo(function LogLine({ e }: { e: LogEntry }) {
  return (
    <li
      data-testid="log-entry"
      data-type={e.type}
      data-topic={e.topic ?? undefined}
      data-offset={e.offset ?? undefined}
      className={`log log-${e.type}`}
    >
      <span className="mono muted">{formatTime(e.timestamp)}</span>
      <span className="log-type">{e.type}</span>
      {e.offset !== null && <span className="mono muted">#{e.offset}</span>}
      <span className="log-text">{e.summary}</span>
    </li>
  );
});

export const MessageLog = memo(function MessageLog(props: { log: readonly LogEntry[]; total: number; limit: number }) {
  return (
    <section className="panel panel-log" data-testid="message-log" data-count={props.log.length} data-total={props.total}>
      <header className="panel-head">
        <h2>Message log</h2>
        <span className="muted">
          last {Math.min(props.limit, props.log.length)} of {formatInt(props.total)}
        </span>
      </header>
      <ol className="log-list">
        {props.log.map((e) => (
          <LogLine key={e.n} e={e} />
        ))}
      </ol>
    </section>
  );
});

export function ErrorBanner(props: { error: { code: string; message: string; timestamp: string } | null; count: number }) {
  if (!props.error) return null;
  return (
    <div className="error-banner" data-testid="last-error" data-code={props.error.code}>
      <strong>{props.error.code}</strong> {props.error.message}
      <span className="muted">
        {' '}
        · {props.count} error{props.count === 1 ? '' : 's'} · {formatTime(props.error.timestamp)}
      </span>
    </div>
  );
}

const GAP_TEXT: Record<GapReason, string> = {
  epoch_changed: "the server's history was reset",
  history_trimmed: 'the server no longer had every event missed',
  position_ahead: 'the position resumed from was ahead of the server',
  already_live: 'the topic was already live on this connection when it asked to resume',
};

/** Shown once the client reports a gap: events of a topic were lost to this page. */
export function GapNotice(props: { gap: Gap | null; onDismiss: () => void }) {
  const { gap } = props;
  if (!gap) return null;
  return (
    <div className="gap-notice" data-testid="gap-notice" data-topic={gap.topic} data-reason={gap.reason} role="status">
      <strong>Events may be missing</strong>
      <span>
        on {humanize(gap.topic)}: {GAP_TEXT[gap.reason]}
        {gap.position && (
          <span className="mono muted">
            {' '}
            · continuing after {gap.position.epoch}:{gap.position.offset}
          </span>
        )}
      </span>
      <button type="button" className="btn" data-testid="gap-dismiss" onClick={props.onDismiss}>
        Dismiss
      </button>
    </div>
  );
}
