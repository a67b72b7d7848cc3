/** Formatting for the dashboard. */
import type { ConnectionStatus } from '../client';

export function connectionLabel(status: ConnectionStatus): string {
  switch (status.state) {
    case 'idle':
      return 'Idle';
    case 'connecting':
      return 'Connecting…';
    case 'connected':
      return 'Connected';
    case 'reconnecting':
      return Number.isFinite(status.maxAttempts)
        ? `Reconnecting (attempt ${status.attempt}/${status.maxAttempts})…`
        : `Reconnecting (attempt ${status.attempt})…`;
    case 'failed':
      return 'Disconnected: gave up';
    case 'closed':
      return 'Closed';
  }
}

export function humanize(value: string): string {
  return value.replace(/_/g, ' ');
}

export function formatInt(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

export function formatPercent(ratio: number): string {
  return `${(ratio * 100).toFixed(1)}%`;
}

/** `2024-01-15T10:30:00Z` -> `10:30:00` (UTC); empty or null -> `—`. */
export function formatTime(ts: string | null): string {
  if (!ts) return '—';
  const m = /T(\d{2}:\d{2}:\d{2})/.exec(ts);
  return m?.[1] ?? ts;
}

/** `2024-01-16T14:00:00Z` -> `Jan 16 14:00` (UTC). */
export function formatDateTime(ts: string | null): string {
  if (!ts) return '—';
  const d = new Date(ts);
  if (Number.isNaN(d.getTime())) return ts;
  const month = d.toLocaleString('en-US', { month: 'short', timeZone: 'UTC' });
  const hh = String(d.getUTCHours()).padStart(2, '0');
  const mm = String(d.getUTCMinutes()).padStart(2, '0');
  return `${month} ${d.getUTCDate()} ${hh}:${mm}`;
}

/** Milliseconds as `12 ms` or `1.25 s`; null -> `—`. */
export function formatLatency(ms: number | null): string {
  if (ms === null) return '—';
  return ms < 1_000 ? `${Math.round(ms)} ms` : `${(ms / 1_000).toFixed(2)} s`;
}
