import { memo, useRef } from 'react';
import { fitViewport, gridLines, gridStep, project, type Viewport } from './map';
import type { MapPoint } from './store';

const W = 640;
const H = 360;

/** Keeps the previous viewport while every point still fits and it is not much too large: no jitter. */
function useStableViewport(points: MapPoint[]): Viewport {
  const ref = useRef<Viewport | null>(null);
  const fitted = fitViewport(points, W, H);
  const prev = ref.current;
  const fits =
    prev !== null &&
    points.length > 0 &&
    points.every((p) => p.latitude > prev.minLat && p.latitude < prev.maxLat && p.longitude > prev.minLon && p.longitude < prev.maxLon) &&
    prev.maxLat - prev.minLat < 3 * (fitted.maxLat - fitted.minLat);
  if (!fits) ref.current = fitted;
  return ref.current ?? fitted;
}

const Point = memo(function Point({ p, x, y }: { p: MapPoint; x: number; y: number }) {
  const rad = ((p.heading - 90) * Math.PI) / 180;
  const moving = p.speed_kmh > 0;
  return (
    <g data-testid="map-point" data-package-id={p.package_id} className={`pt pt-${p.status}`} transform={`translate(${x.toFixed(1)},${y.toFixed(1)})`}>
      <title>
        {`${p.package_id}${p.vehicle_id ? ` on ${p.vehicle_id}` : ''}\n${p.status.replace(/_/g, ' ')}, ${p.speed_kmh.toFixed(0)} km/h${p.next_stop ? `\nnext: ${p.next_stop}` : ''}\n${p.latitude.toFixed(4)}, ${p.longitude.toFixed(4)}`}
      </title>
      {moving && <line x1={0} y1={0} x2={(Math.cos(rad) * 11).toFixed(1)} y2={(Math.sin(rad) * 11).toFixed(1)} className="heading" />}
      <circle r={4.5} />
    </g>
  );
});

export const PackageMap = memo(function PackageMap(props: { points: Readonly<Record<string, MapPoint>> }) {
  const points = Object.values(props.points);
  const v = useStableViewport(points);
  const latStep = gridStep(v.maxLat - v.minLat, 5);
  const lonStep = gridStep(v.maxLon - v.minLon, 8);
  return (
    <section className="panel panel-map" data-testid="map" data-count={points.length}>
      <header className="panel-head">
        <h2>Map</h2>
        <span className="muted">{points.length} positions</span>
      </header>
      <svg viewBox={`0 0 ${W} ${H}`} role="img" aria-label="Package positions" data-testid="package-map">
        <rect width={W} height={H} className="map-bg" />
        {gridLines(v.minLat, v.maxLat, latStep).map((lat) => {
          const [, y] = project(v, lat, v.minLon);
          return (
            <g key={`lat${lat}`}>
              <line x1={0} x2={W} y1={y} y2={y} className="graticule" />
              <text x={4} y={y - 3} className="grid-label">
                {`${Math.abs(lat)}°${lat >= 0 ? 'N' : 'S'}`}
              </text>
            </g>
          );
        })}
        {gridLines(v.minLon, v.maxLon, lonStep).map((lon) => {
          const [x] = project(v, v.minLat, lon);
          return (
            <g key={`lon${lon}`}>
              <line x1={x} x2={x} y1={0} y2={H} className="graticule" />
              <text x={x + 3} y={H - 4} className="grid-label">
                {`${Math.abs(lon)}°${lon >= 0 ? 'E' : 'W'}`}
              </text>
            </g>
          );
        })}
        {points.map((p) => {
          const [x, y] = project(v, p.latitude, p.longitude);
          return <Point key={p.package_id} p={p} x={x} y={y} />;
        })}
        {points.length === 0 && (
          <text x={W / 2} y={H / 2} textAnchor="middle" className="map-empty">
            No positions yet
          </text>
        )}
      </svg>
    </section>
  );
});
