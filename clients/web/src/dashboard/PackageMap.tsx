import { select } from 'd3-selection';
import { zoom, zoomIdentity, type D3ZoomEvent, type ZoomBehavior } from 'd3-zoom';
import { memo, useEffect, useMemo, useRef, useState, type RefObject } from 'react';
import type { BoundingBox } from '../frames';
import { drawAtlas } from './atlas';
import {
  MAP_SIZE,
  ZOOM_LIMITS,
  ZOOM_STEP,
  formatBox,
  onScreen,
  toScreen,
  usProjection,
  viewportOf,
  viewportReporter,
  worldExtent,
  type ViewTransform,
} from './map';
import type { MapPoint } from './store';

const W = MAP_SIZE.width;
const H = MAP_SIZE.height;
const PROJECTION = usProjection(W, H);
const IDENTITY: ViewTransform = { k: 1, x: 0, y: 0 };

/** The outlines, drawn once per page (the projection never changes; zoom transforms their group). */
let atlas: ReturnType<typeof drawAtlas> | null = null;

/** Land and state lines; rendered once, as zooming only changes the parent group's transform. */
const Land = memo(function Land() {
  atlas ??= drawAtlas(PROJECTION);
  return (
    <g className="land">
      {atlas.states.map((s) => (
        <path key={s.id} d={s.d} className="state" data-testid="map-state" data-name={s.name} />
      ))}
      <path d={atlas.nation} className="nation" />
    </g>
  );
});

const Point = memo(function Point({ p, x, y, inView }: { p: MapPoint; x: number; y: number; inView: boolean }) {
  const rad = ((p.heading - 90) * Math.PI) / 180;
  const moving = p.speed_kmh > 0;
  return (
    <g
      data-testid="map-point"
      data-package-id={p.package_id}
      data-in-view={inView}
      className={`pt pt-${p.status}`}
      transform={`translate(${x.toFixed(1)},${y.toFixed(1)})`}
    >
      <title>
        {`${p.package_id}${p.vehicle_id ? ` on ${p.vehicle_id}` : ''}\n${p.status.replace(/_/g, ' ')}, ${p.speed_kmh.toFixed(0)} km/h${p.next_stop ? `\nnext: ${p.next_stop}` : ''}\n${p.latitude.toFixed(4)}, ${p.longitude.toFixed(4)}`}
      </title>
      {moving && <line x1={0} y1={0} x2={(Math.cos(rad) * 11).toFixed(1)} y2={(Math.sin(rad) * 11).toFixed(1)} className="heading" />}
      <circle r={4.5} />
    </g>
  );
});

/**
 * d3-zoom on the svg (drag to pan, wheel to zoom), React owning every node:
 * the zoom behaviour only reports transforms, which become state. Returns the
 * transform and the button actions.
 */
function useZoom(svg: RefObject<SVGSVGElement | null>) {
  const behaviour = useRef<ZoomBehavior<SVGSVGElement, unknown> | null>(null);
  const [t, setT] = useState<ViewTransform>(IDENTITY);
  useEffect(() => {
    const node = svg.current;
    if (!node) return;
    const z = zoom<SVGSVGElement, unknown>()
      .extent([
        [0, 0],
        [W, H],
      ])
      .scaleExtent([ZOOM_LIMITS.min, ZOOM_LIMITS.max])
      .translateExtent(worldExtent(PROJECTION))
      .on('zoom', (e: D3ZoomEvent<SVGSVGElement, unknown>) => setT({ k: e.transform.k, x: e.transform.x, y: e.transform.y }));
    const selection = select(node);
    selection.call(z);
    behaviour.current = z;
    return () => {
      selection.on('.zoom', null);
      behaviour.current = null;
    };
  }, [svg]);
  const actions = useMemo(
    () => ({
      zoomBy(factor: number) {
        if (behaviour.current && svg.current) behaviour.current.scaleBy(select(svg.current), factor);
      },
      reset() {
        if (behaviour.current && svg.current) behaviour.current.transform(select(svg.current), zoomIdentity);
      },
    }),
    [svg],
  );
  return { t, ...actions };
}

/**
 * Reports `box` (the view's viewport) through `onViewport`, debounced, and only
 * when it changed (see `viewportReporter`); the latest callback is used.
 */
function useViewportReport(box: BoundingBox | null, onViewport: ((box: BoundingBox | null) => void) | undefined) {
  const latest = useRef(onViewport);
  latest.current = onViewport;
  const report = useMemo(() => viewportReporter((b) => latest.current?.(b)), []);
  useEffect(() => () => report.cancel(), [report]);
  // Keyed on the box's text: a new object with the same edges is no change.
  const key = formatBox(box);
  useEffect(() => report(box), [key, report]);
}

/**
 * The package map: US state outlines (bundled, offline) with the latest
 * position of each package on top. Drag pans, the wheel and the +/− buttons
 * zoom, ⟲ resets. Zoomed in, the visible box is reported through `onViewport`
 * (debounced; null at the widest zoom) so the subscription carries only what
 * the map shows. Points keep their size whatever the zoom; points off-screen
 * stay in the DOM (and the store) and are counted apart.
 */
export const PackageMap = memo(function PackageMap(props: {
  points: Readonly<Record<string, MapPoint>>;
  /** The area to subscribe to: the visible box, or null for everywhere (`setViewport`). */
  onViewport?: (box: BoundingBox | null) => void;
  /** The box the bridge last confirmed (its `viewport` frame); null: the whole world. */
  confirmedViewport?: BoundingBox | null;
}) {
  const svg = useRef<SVGSVGElement>(null);
  const { t, zoomBy, reset } = useZoom(svg);
  const box = viewportOf(PROJECTION, t, W, H);
  useViewportReport(box, props.onViewport);
  const points = Object.values(props.points);
  const placed = points.map((p) => {
    const at = toScreen(PROJECTION, t, p.longitude, p.latitude);
    return { p, at, inView: onScreen(at, W, H) };
  });
  const inView = placed.reduce((n, x) => n + (x.inView ? 1 : 0), 0);
  const zoomed = t.k > ZOOM_LIMITS.min + 1e-6;
  return (
    <section
      className="panel panel-map"
      data-testid="map"
      data-count={points.length}
      data-viewport={formatBox(box)}
      data-confirmed-viewport={formatBox(props.confirmedViewport ?? null)}
      data-zoom={t.k.toFixed(3)}
    >
      <header className="panel-head">
        <h2>Map</h2>
        <span className="muted" data-testid="map-in-view" data-count={inView}>
          {points.length === inView ? `${points.length} positions` : `showing ${inView} in view of ${points.length} positions`}
          {props.confirmedViewport && ' · receiving this area only'}
        </span>
        <span className="map-tools">
          <button type="button" data-testid="map-zoom-in" aria-label="Zoom in" title="Zoom in" onClick={() => zoomBy(ZOOM_STEP)} disabled={t.k >= ZOOM_LIMITS.max}>
            +
          </button>
          <button type="button" data-testid="map-zoom-out" aria-label="Zoom out" title="Zoom out" onClick={() => zoomBy(1 / ZOOM_STEP)} disabled={!zoomed}>
            −
          </button>
          <button type="button" data-testid="map-reset" aria-label="Reset view" title="Reset view (whole US, every position)" onClick={reset}>
            ⟲
          </button>
        </span>
      </header>
      <svg ref={svg} viewBox={`0 0 ${W} ${H}`} role="img" aria-label="Package positions" data-testid="package-map" className="map-svg">
        <rect width={W} height={H} className="map-bg" />
        <g transform={`translate(${t.x},${t.y}) scale(${t.k})`}>
          <Land />
        </g>
        <g className="points">
          {placed.map(({ p, at, inView }) => at && <Point key={p.package_id} p={p} x={at[0]} y={at[1]} inView={inView} />)}
        </g>
        {points.length === 0 && (
          <text x={W / 2} y={H / 2} textAnchor="middle" className="map-empty">
            No positions yet
          </text>
        )}
      </svg>
    </section>
  );
});
