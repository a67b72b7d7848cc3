#!/usr/bin/env node
/**
 * A stand-in for the ClearPath Realtime bridge, for the dashboard's end-to-end
 * tests and for front-end work without the Python services. It speaks the
 * bridge's WebSocket protocol (welcome, resume with `?since=TOPIC:EPOCH:OFFSET`
 * at connect or `since` in a subscribe, with replay and `recovered`/`reason`,
 * unsubscribe, ping/pong, error frames, batched arrays), keeps a bounded
 * history per topic, serves `dist/` at `/`, and simulates a fleet of packages.
 *
 *   node clients/web/e2e/fake-bridge.mjs --port 8000 --rate 100
 *
 * It is not the real bridge: the end-to-end tests against `clearpath serve`
 * are the ones that count. Only ever binds to 127.0.0.1.
 */
import { randomBytes } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { createServer } from 'node:http';
import { extname, join, normalize, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { WebSocketServer } from 'ws';

export const TOPICS = [
  'package_updates',
  'anomalies',
  'dashboard_metrics',
  'notifications',
  'map_updates',
  'agent_activity',
  'system_health',
];

const TOPIC_OF = {
  package_update: 'package_updates',
  anomaly_detected: 'anomalies',
  dashboard_metrics: 'dashboard_metrics',
  notification: 'notifications',
  map_update: 'map_updates',
  agent_activity: 'agent_activity',
  system_health: 'system_health',
};

export const ENDPOINTS = {
  '/ws/connect': [],
  '/ws/packages': ['package_updates'],
  '/ws/dashboard': ['dashboard_metrics', 'notifications'],
  '/ws/map': ['map_updates', 'package_updates'],
  '/ws/agents': ['agent_activity', 'system_health'],
};

const HISTORY = 1000;
const MIME = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
};

const now = () => new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');

/**
 * Starts the fake bridge.
 * @param {{ port?: number, distDir?: string, rate?: number, pingInterval?: number, seed?: number }} [options]
 */
export async function startFakeBridge(options = {}) {
  const distDir = resolve(options.distDir ?? fileURLToPath(new URL('../dist/', import.meta.url)));
  let epoch = randomBytes(4).toString('hex');
  /** @type {Map<string, { offset: number, events: any[] }>} */
  const streams = new Map(TOPICS.map((t) => [t, { offset: 0, events: [] }]));
  /** @type {Set<{ ws: import('ws').WebSocket, topics: Set<string> }>} */
  const conns = new Set();
  let refusing = false;
  let nextId = 1;

  const http = createServer(async (req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    if (path === '/readyz' || path === '/ws/status') {
      // The dashboard's operations panel polls /ws/status for the readiness, as on a
      // real bridge (the public part: status, upstream, readiness).
      const ready = { ready: true };
      const body = path === '/readyz' ? ready : { status: 'ok', upstream: { connected: true }, readiness: ready };
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
      return;
    }
    const file = normalize(join(distDir, path === '/' ? 'index.html' : path));
    if (!file.startsWith(distDir)) {
      res.writeHead(403).end();
      return;
    }
    try {
      if (!(await stat(file)).isFile()) throw new Error('not a file');
      res.writeHead(200, { 'content-type': MIME[extname(file)] ?? 'application/octet-stream' });
      res.end(await readFile(file));
    } catch {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
    }
  });

  const wss = new WebSocketServer({ noServer: true });
  http.on('upgrade', (req, socket, head) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    if (refusing || !(path in ENDPOINTS)) {
      socket.write('HTTP/1.1 503 Service Unavailable\r\n\r\n');
      socket.destroy();
      return;
    }
    const since = new URL(req.url ?? '/', 'http://x').searchParams.getAll('since');
    wss.handleUpgrade(req, socket, head, (ws) => onConnection(ws, path, since));
  });

  /** @param {any} conn @param {any} frame */
  function send(conn, frame) {
    if (conn.ws.readyState === 1) conn.ws.send(JSON.stringify(frame));
  }

  /**
   * Subscribes `conn` to `topic`, resuming after `since` if given: the
   * `subscribed` frame, then the replay. Not recovered: `position` is where
   * the stream continues (the replay comes after it).
   */
  function subscribe(conn, topic, since) {
    conn.topics.add(topic);
    const stream = streams.get(topic);
    let replay = [];
    let position = { offset: stream.offset, epoch };
    let recovered = true;
    let reason;
    if (since && typeof since.offset === 'number') {
      const oldest = stream.events[0]?.position.offset ?? stream.offset + 1;
      if (since.epoch !== epoch) reason = 'epoch_changed';
      else if (since.offset > stream.offset) reason = 'position_ahead';
      else if (since.offset < oldest - 1) reason = 'history_trimmed';
      replay = reason === 'position_ahead' ? [] : stream.events.filter((e) => reason || e.position.offset > since.offset);
      if (reason) {
        recovered = false;
        position = { offset: (replay[0]?.position.offset ?? stream.offset + 1) - 1, epoch };
      }
    }
    send(conn, {
      type: 'subscribed',
      data: { subscription_type: topic, subscriptions: [...conn.topics], recovered, position, ...(reason ? { reason } : {}) },
      timestamp: now(),
    });
    for (let i = 0; i < replay.length; i += 100) send(conn, replay.slice(i, i + 100));
  }

  /** `TOPIC:EPOCH:OFFSET` -> [topic, position], or null. */
  function parseSince(value) {
    const [topic, sinceEpoch, offset, ...rest] = value.split(':');
    if (rest.length || !TOPICS.includes(topic) || !/^\d+$/.test(offset ?? '')) return null;
    return [topic, { offset: Number(offset), epoch: sinceEpoch }];
  }

  function onConnection(ws, path, sinceParams = []) {
    const conn = { ws, topics: new Set(ENDPOINTS[path]) };
    conns.add(conn);
    send(conn, {
      type: 'welcome',
      data: {
        connection_id: `fake-${nextId++}`,
        endpoint: path,
        subscriptions: [...conn.topics],
        subscription_types: TOPICS,
        ping_interval: options.pingInterval ?? 20,
      },
      timestamp: now(),
    });
    for (const parsed of sinceParams.map(parseSince)) if (parsed) subscribe(conn, ...parsed);
    ws.on('message', (raw, isBinary) => {
      let msg;
      try {
        msg = JSON.parse(isBinary ? '' : raw.toString());
      } catch {
        send(conn, { type: 'error', data: { code: 'invalid_json', message: 'not JSON' }, timestamp: now() });
        return;
      }
      const type = msg?.type;
      const topic = msg?.data?.subscription_type;
      if (type === 'ping') return send(conn, { type: 'pong', data: {}, timestamp: now() });
      if (type !== 'subscribe' && type !== 'unsubscribe') {
        return send(conn, { type: 'error', data: { code: 'invalid_message', message: `unknown type ${type}` }, timestamp: now() });
      }
      if (!TOPICS.includes(topic)) {
        return send(conn, { type: 'error', data: { code: 'unknown_subscription_type', message: String(topic) }, timestamp: now() });
      }
      if (type === 'unsubscribe') {
        conn.topics.delete(topic);
        return send(conn, { type: 'unsubscribed', data: { subscription_type: topic, subscriptions: [...conn.topics] }, timestamp: now() });
      }
      subscribe(conn, topic, msg.data.since);
    });
    ws.on('close', () => conns.delete(conn));
    ws.on('error', () => conns.delete(conn));
  }

  /** Publishes one event and sends it to every subscribed connection (batched per call). */
  function publish(events) {
    /** @type {Map<any, any[]>} */
    const out = new Map();
    for (const { type, data } of events) {
      const topic = TOPIC_OF[type];
      const stream = streams.get(topic);
      stream.offset += 1;
      const frame = {
        type,
        data,
        timestamp: now(),
        subscription_type: topic,
        id: `evt-${topic}-${stream.offset}`,
        position: { offset: stream.offset, epoch },
      };
      stream.events.push(frame);
      if (stream.events.length > HISTORY) stream.events.shift();
      for (const conn of conns) {
        if (!conn.topics.has(topic)) continue;
        if (!out.has(conn)) out.set(conn, []);
        out.get(conn).push(frame);
      }
    }
    for (const [conn, frames] of out) send(conn, frames.length === 1 ? frames[0] : frames);
  }

  const sim = makeSimulator(options.seed ?? 7);
  let rate = options.rate ?? 50;
  const TICK_MS = 50;
  let carry = 0;
  const timer = setInterval(() => {
    carry += (rate * TICK_MS) / 1000;
    const n = Math.floor(carry);
    carry -= n;
    if (n > 0) publish(sim.next(n));
  }, TICK_MS);

  await new Promise((ok) => http.listen(options.port ?? 0, '127.0.0.1', ok));
  const address = http.address();
  const port = typeof address === 'object' && address ? address.port : 0;

  return {
    port,
    url: `http://127.0.0.1:${port}`,
    get epoch() {
      return epoch;
    },
    /** Events per second from now on (0 pauses the simulator). */
    setRate(r) {
      rate = r;
    },
    publish,
    /** The last offset of each topic. */
    offsets() {
      return Object.fromEntries([...streams].map(([t, s]) => [t, s.offset]));
    },
    connectionCount() {
      return conns.size;
    },
    /**
     * Loses every topic's history, as an in-memory core that restarted: a new
     * epoch, offsets from 0, and to each connection, per topic it has, the
     * bridge's notice (`subscribed`, `recovered: false`, `epoch_changed`).
     */
    resetHistory() {
      epoch = randomBytes(4).toString('hex');
      for (const stream of streams.values()) Object.assign(stream, { offset: 0, events: [] });
      for (const conn of conns) {
        for (const topic of conn.topics) {
          send(conn, {
            type: 'subscribed',
            data: {
              subscription_type: topic,
              subscriptions: [...conn.topics],
              recovered: false,
              reason: 'epoch_changed',
              position: { offset: 0, epoch },
            },
            timestamp: now(),
          });
        }
      }
    },
    /** Closes every client connection with `code` (1001 going away, 1013 try again…). */
    dropAll(code = 1001, reason = 'going away') {
      for (const conn of conns) conn.ws.close(code, reason);
    },
    /** Ends every connection abruptly, as a crashed server or a cut network would. */
    killAll() {
      for (const conn of conns) conn.ws.terminate();
    },
    /** While true, new WebSocket connections are refused. */
    refuse(value) {
      refusing = value;
    },
    async close() {
      clearInterval(timer);
      for (const conn of conns) conn.ws.terminate();
      wss.close();
      await new Promise((ok) => http.close(() => ok(undefined)));
    },
  };
}

/** A deterministic little fleet: packages moving between US hubs. */
function makeSimulator(seed) {
  let s = seed >>> 0 || 1;
  const rand = () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 4294967296;
  };
  const pick = (list) => list[Math.floor(rand() * list.length)];
  const hubs = [
    ['Chicago Distribution Center', 41.88, -87.63],
    ['Memphis Hub', 35.15, -90.05],
    ['Louisville Worldport', 38.25, -85.76],
    ['Dallas Sort Center', 32.78, -96.8],
    ['Atlanta Gateway', 33.75, -84.39],
    ['Denver Depot', 39.74, -104.99],
    ['Newark Terminal', 40.74, -74.17],
    ['Los Angeles Hub', 34.05, -118.24],
    ['Seattle Facility', 47.61, -122.33],
    ['Phoenix Station', 33.45, -112.07],
  ];
  const carriers = ['FedEx', 'UPS', 'DHL', 'USPS'];
  const statuses = ['created', 'in_transit', 'in_transit', 'in_transit', 'out_for_delivery', 'delivered', 'delayed'];
  const packages = Array.from({ length: 80 }, (_, i) => {
    const from = pick(hubs);
    const to = pick(hubs.filter((h) => h !== from));
    return {
      id: `pkg-${String(i + 1).padStart(4, '0')}`,
      tracking: `PKG${String(100000000 + Math.floor(rand() * 899999999))}`,
      carrier: pick(carriers),
      from,
      to,
      t: rand(),
      status: 'in_transit',
      vehicle: `truck-${1 + Math.floor(rand() * 30)}`,
    };
  });
  const counters = { delivered: 312, anomalies: 12 };

  function event() {
    const r = rand();
    const p = pick(packages);
    if (r < 0.4) {
      p.t = Math.min(1, p.t + 0.02 + rand() * 0.03);
      if (p.t >= 1) {
        p.from = p.to;
        p.to = pick(hubs.filter((h) => h !== p.from));
        p.t = 0;
      }
      const lat = p.from[1] + (p.to[1] - p.from[1]) * p.t;
      const lon = p.from[2] + (p.to[2] - p.from[2]) * p.t;
      const heading = (Math.atan2(p.to[2] - p.from[2], p.to[1] - p.from[1]) * 180) / Math.PI;
      return {
        type: 'map_update',
        data: {
          package_id: p.id,
          vehicle_id: p.vehicle,
          latitude: Number(lat.toFixed(5)),
          longitude: Number(lon.toFixed(5)),
          heading: Number(((heading + 360) % 360).toFixed(1)),
          speed_kmh: Number((55 + rand() * 40).toFixed(1)),
          route_id: `route-${p.from[0].split(' ')[0].toLowerCase()}-${p.to[0].split(' ')[0].toLowerCase()}`,
          next_stop: p.to[0],
          status: p.status,
        },
      };
    }
    if (r < 0.75) {
      p.status = pick(statuses);
      if (p.status === 'delivered') counters.delivered += 1;
      const eta = new Date(Date.now() + (6 + rand() * 60) * 3600_000).toISOString().replace(/\.\d{3}Z$/, 'Z');
      return {
        type: 'package_update',
        data: {
          package_id: p.id,
          tracking_number: p.tracking,
          status: p.status,
          location: p.t < 0.5 ? p.from[0] : p.to[0],
          estimated_delivery: eta,
          last_scan_time: now(),
          carrier: p.carrier,
        },
      };
    }
    if (r < 0.82) {
      counters.anomalies += 1;
      const kinds = [
        ['delayed_delivery', 'Package delayed by 4 hours', 'reroute_through_alternative_center'],
        ['route_deviation', 'Vehicle left the planned route', 'contact_driver'],
        ['missed_scan', 'No scan for 12 hours', 'request_manual_scan'],
        ['temperature_excursion', 'Cold chain above 8°C for 20 minutes', 'inspect_contents'],
        ['damaged', 'Package reported damaged at hub', 'file_claim_and_reship'],
        ['wrong_location', 'Scanned at an unexpected hub', 'reroute_to_destination'],
      ];
      const [anomaly_type, description, recommended_action] = pick(kinds);
      return {
        type: 'anomaly_detected',
        data: {
          package_id: p.id,
          anomaly_type,
          severity: pick(['low', 'medium', 'medium', 'high', 'critical']),
          description,
          recommended_action,
          confidence_score: Number((0.5 + rand() * 0.5).toFixed(2)),
          detected_at: now(),
        },
      };
    }
    if (r < 0.88) {
      const inTransit = packages.filter((x) => x.status === 'in_transit' || x.status === 'out_for_delivery').length;
      return {
        type: 'dashboard_metrics',
        data: {
          total_packages: 1247 + counters.delivered - 312,
          in_transit: 800 + inTransit,
          delivered: counters.delivered,
          delayed: packages.filter((x) => x.status === 'delayed').length + 30,
          anomalies: counters.anomalies,
          recovery_rate: Number((0.9 + rand() * 0.08).toFixed(3)),
          avg_delivery_time: Number((2.2 + rand() * 0.6).toFixed(2)),
        },
      };
    }
    if (r < 0.94) {
      return {
        type: 'agent_activity',
        data: {
          agent_id: `${pick(['recovery', 'routing', 'customer_service'])}-agent-${1 + Math.floor(rand() * 4)}`,
          agent_type: pick(['recovery', 'routing', 'customer_service']),
          action: pick(['reroute_package', 'notify_customer', 'reschedule_delivery', 'open_claim']),
          outcome: pick(['succeeded', 'succeeded', 'pending', 'failed']),
          package_id: p.id,
          details: `Handled ${p.tracking}`,
          duration_ms: Math.floor(50 + rand() * 900),
        },
      };
    }
    if (r < 0.97) {
      return {
        type: 'system_health',
        data: {
          component: pick(['core', 'bridge', 'redis', 'routing-service']),
          status: pick(['healthy', 'healthy', 'healthy', 'degraded', 'down']),
          cpu_percent: Number((10 + rand() * 80).toFixed(1)),
          memory_percent: Number((20 + rand() * 60).toFixed(1)),
          latency_ms: Number((2 + rand() * 40).toFixed(1)),
          error_rate: Number((rand() * 2).toFixed(2)),
          message: '',
        },
      };
    }
    return {
      type: 'notification',
      data: {
        notification_id: `n-${Math.floor(rand() * 1e9)}`,
        user_id: '',
        title: pick(['Delivery delayed', 'Package rerouted', 'Customer contacted']),
        message: `${p.tracking} needs attention`,
        severity: pick(['low', 'medium', 'high']),
        package_id: p.id,
        action_url: `/packages/${p.id}`,
      },
    };
  }

  return {
    next(n) {
      return Array.from({ length: n }, event);
    },
  };
}

// CLI: node e2e/fake-bridge.mjs [--port 8000] [--rate 50] [--dist path]
if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const arg = (name, fallback) => {
    const i = process.argv.indexOf(`--${name}`);
    return i > 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1] : fallback;
  };
  const bridge = await startFakeBridge({
    port: Number(arg('port', '8000')),
    rate: Number(arg('rate', '50')),
    distDir: arg('dist', undefined),
  });
  console.log(`fake bridge on ${bridge.url} (epoch ${bridge.epoch}); Ctrl-C to stop`);
  const stop = () => bridge.close().then(() => process.exit(0));
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}
