import { memo } from 'react';
import { formatDateTime, formatTime, humanize } from './format';
import type { PackageRow } from './store';

const Row = memo(function Row({ row }: { row: PackageRow }) {
  return (
    <tr data-testid="package-row" data-package-id={row.package_id} data-status={row.status}>
      <td className="mono">{row.tracking_number || row.package_id}</td>
      <td>
        <span className={`status status-${row.status}`}>{humanize(row.status)}</span>
      </td>
      <td>{row.location || '—'}</td>
      <td>{row.carrier || '—'}</td>
      <td className="num">{formatDateTime(row.estimated_delivery)}</td>
      <td className="num">{formatTime(row.last_scan_time)}</td>
      <td className="num">{row.updates}</td>
    </tr>
  );
});

export const PackageTable = memo(function PackageTable(props: {
  order: readonly string[];
  packages: Readonly<Record<string, PackageRow>>;
  limit: number;
}) {
  return (
    <section className="panel panel-packages" data-testid="package-table" data-count={props.order.length}>
      <header className="panel-head">
        <h2>Packages</h2>
        <span className="muted">
          {props.order.length} shown (latest {props.limit})
        </span>
      </header>
      <div className="table-scroll">
        <table>
          <thead>
            <tr>
              <th>Tracking</th>
              <th>Status</th>
              <th>Location</th>
              <th>Carrier</th>
              <th>ETA (UTC)</th>
              <th>Last scan</th>
              <th>Upd.</th>
            </tr>
          </thead>
          <tbody>
            {props.order.map((id) => {
              const row = props.packages[id];
              return row ? <Row key={id} row={row} /> : null;
            })}
          </tbody>
        </table>
        {props.order.length === 0 && <p className="empty">No package updates yet.</p>}
      </div>
    </section>
  );
});
