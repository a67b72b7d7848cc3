import { memo } from 'react';
import type { ConnectionStatus } from '../client';
import { formatLatency, humanize } from './format';
import { LATENCY_WINDOW, type LatencyStats } from './latency';
import type { Readiness } from './readiness';

const READINESS_TEXT: Record<Readiness['state'], string> = {
  ready: 'ready',
  not_ready: 'not ready',
  unknown: 'unknown',
};

/**
 * How this page's feed is doing: its socket, the bridge's readiness (its
 * upstream to the core, from `GET /readyz`), the event rate, and the delivery
 * latency of the last events (publish to arrival here).
 */
export const OperationsPanel = memo(function OperationsPanel(props: {
  status: ConnectionStatus;
  readiness: Readiness;
  eventsPerSecond: number;
  latency: LatencyStats;
}) {
  const { status, readiness, latency } = props;
  const why = readiness.state !== 'ready' && readiness.reason ? readiness.reason : null;
  return (
    <section className="panel panel-ops" data-testid="operations-panel" aria-label="Operations">
      <header className="panel-head">
        <h2>Operations</h2>
        <span className="muted">this page</span>
      </header>
      <dl className="ops">
        <div className={`ops-item ops-socket-${status.state}`} data-testid="ops-socket" data-state={status.state}>
          <dt>Socket</dt>
          {/* One word: the header's badge has the details (and the attempt). */}
          <dd>{humanize(status.state)}</dd>
        </div>
        <div
          className={`ops-item ops-ready-${readiness.state}`}
          data-testid="ops-upstream"
          data-state={readiness.state}
          title={why ?? undefined}
        >
          <dt title="the bridge's GET /readyz: its stream from the core">Upstream</dt>
          <dd>
            {READINESS_TEXT[readiness.state]}
            {readiness.state === 'not_ready' && why && <span className="ops-sub">{why}</span>}
            {readiness.canaryMs !== null && <span className="ops-sub">canary {formatLatency(readiness.canaryMs)}</span>}
          </dd>
        </div>
        <div className="ops-item" data-testid="ops-connections" data-value={readiness.connections ?? ''}>
          <dt title="sockets open on the bridge (its /ws/status)">Connections</dt>
          <dd>{readiness.connections ?? '–'}</dd>
        </div>
        <div className="ops-item" data-testid="ops-rate" data-value={props.eventsPerSecond.toFixed(1)}>
          <dt>Events/s</dt>
          <dd>{props.eventsPerSecond.toFixed(1)}</dd>
        </div>
        <div className="ops-item" data-testid="ops-p50" data-value={latency.p50 ?? ''}>
          <dt>Latency p50</dt>
          <dd>{formatLatency(latency.p50)}</dd>
        </div>
        <div className="ops-item" data-testid="ops-p99" data-value={latency.p99 ?? ''}>
          <dt>Latency p99</dt>
          <dd>{formatLatency(latency.p99)}</dd>
        </div>
      </dl>
      <p className="ops-note muted" data-testid="ops-latency-count" data-count={latency.count}>
        {latency.count === 0
          ? 'latency: no events with published_at yet'
          : `latency: publish to arrival here, last ${latency.count} events (≤ ${LATENCY_WINDOW.ms / 1_000} s); clock skew included`}
      </p>
    </section>
  );
});
