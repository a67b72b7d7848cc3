import { useCallback, useState } from 'react';
import type { Topic } from '../frames';
import type { Gap } from '../positions';
import { useDashboardFeed } from './feed';
import { OperationsPanel } from './OperationsPanel';
import { PackageMap } from './PackageMap';
import { PackageTable } from './PackageTable';
import {
  ActivityPanel,
  AnomaliesPanel,
  ConnectionBar,
  ErrorBanner,
  GapNotice,
  HealthPanel,
  MessageLog,
  MetricCards,
  NotificationsPanel,
  TopicToggles,
} from './panels';
import { useReadiness } from './readiness';
import { LIMITS } from './store';

export function App(props: {
  endpoint: string;
  initialTopics: readonly Topic[];
  token?: string;
  /** The bridge's `GET /readyz`, polled for the operations panel (none: shown as unknown). */
  readyzUrl?: string;
  /** For tests: what checks `readyzUrl` (default: `fetch`). */
  fetchFn?: typeof fetch;
}) {
  const { ws, state } = useDashboardFeed(props.endpoint, props.initialTopics, props.token);
  // Polled while the socket is open only: a bridge that is down is not asked every 5 s.
  const readiness = useReadiness(ws.status.state === 'connected' ? props.readyzUrl : undefined, props.fetchFn);
  const { subscribe, unsubscribe, reconnect, setViewport } = ws;
  const onToggle = useCallback((topic: Topic, on: boolean) => (on ? subscribe(topic) : unsubscribe(topic)), [subscribe, unsubscribe]);
  const [dismissed, setDismissed] = useState<Gap | null>(null);
  const gap = ws.lastGap === dismissed ? null : ws.lastGap;
  return (
    <div className="app">
      <header className="top">
        <h1>
          ClearPath <span>Realtime</span>
        </h1>
        <ConnectionBar
          status={ws.status}
          endpoint={props.endpoint}
          eventsPerSecond={state.eventsPerSecond}
          eventCount={state.eventCount}
          onRetry={reconnect}
        />
      </header>
      <TopicToggles subscriptions={ws.subscriptions} confirmed={ws.confirmedSubscriptions} onToggle={onToggle} />
      <ErrorBanner error={state.lastError} count={state.errorCount} />
      <GapNotice gap={gap} onDismiss={() => setDismissed(ws.lastGap)} />
      <MetricCards metrics={state.metrics} at={state.metricsAt} />
      <main className="grid">
        <div className="col-main">
          <PackageMap points={state.points} onViewport={setViewport} confirmedViewport={state.viewport} />
          <PackageTable order={state.packageOrder} packages={state.packages} limit={LIMITS.packages} />
        </div>
        <div className="col-side">
          <OperationsPanel
            status={ws.status}
            readiness={readiness}
            eventsPerSecond={state.eventsPerSecond}
            latency={state.latencyStats}
          />
          <AnomaliesPanel anomalies={state.anomalies} />
          <HealthPanel health={state.health} />
          <ActivityPanel activity={state.activity} />
          <NotificationsPanel notifications={state.notifications} />
        </div>
      </main>
      <MessageLog log={state.log} total={state.logCount} limit={LIMITS.log} />
    </div>
  );
}
