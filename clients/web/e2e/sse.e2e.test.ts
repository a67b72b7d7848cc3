/**
 * The SSE fallback in real Chromium against the REAL system: `clearpath serve`
 * behind a small HTTP proxy (in this test) that refuses every WebSocket upgrade
 * with 403 and forwards everything else, streaming — a network that blocks
 * WebSockets. The dashboard must fall back to `GET /sse` by itself, show live
 * events, and after the proxy cuts its stream mid-flow, resume with no gap and
 * no duplicate.
 *
 * Run with `npm -w clients/web run e2e` (builds first). Every wait is bounded;
 * every process and server is stopped after the test.
 */
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { isolatedContext, launchChromium } from './chromium';
import { CLEARPATH_BIN, clearpathAvailable, packageUpdate, publishMany, startClearpath, stopAll } from './clearpath';

const WAIT = { timeout: 20_000 };

if (!clearpathAvailable()) throw new Error(`no clearpath at ${CLEARPATH_BIN}: run \`make setup\` (or set CLEARPATH_BIN)`);

/** A proxy that answers 403 to WebSocket upgrades and forwards the rest, streaming. */
interface RefusingProxy {
  url: string;
  /** WebSocket upgrades refused so far. */
  upgradesRefused: number;
  /** The path and query of every request forwarded, in order. */
  forwarded: string[];
  /** Cuts every stream in flight (both sides), as a network failure would. */
  cut(): number;
  close(): Promise<void>;
}

async function refusingProxy(upstream: string): Promise<RefusingProxy> {
  const target = new URL(upstream);
  const streams = new Set<{ up: IncomingMessage; down: ServerResponse }>();
  const sockets = new Set<Socket>();
  const proxy: RefusingProxy = {
    url: '',
    upgradesRefused: 0,
    forwarded: [],
    cut() {
      const n = streams.size;
      for (const { up, down } of streams) {
        up.destroy();
        down.destroy();
      }
      streams.clear();
      return n;
    },
    close: () =>
      new Promise((done) => {
        proxy.cut();
        for (const s of sockets) s.destroy();
        server.close(() => done());
      }),
  };
  const server: Server = createServer((req, res) => {
    proxy.forwarded.push(req.url ?? '');
    const out = httpRequest(
      { host: target.hostname, port: target.port, path: req.url, method: req.method, headers: req.headers, agent: false },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        const pair = { up, down: res };
        streams.add(pair);
        up.on('close', () => streams.delete(pair));
        up.pipe(res);
      },
    );
    out.on('error', () => res.destroy());
    req.pipe(out);
  });
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  server.on('upgrade', (_req: IncomingMessage, socket: Socket) => {
    proxy.upgradesRefused += 1;
    socket.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
  });
  await new Promise<void>((listening) => server.listen(0, '127.0.0.1', listening));
  const address = server.address();
  proxy.url = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
  return proxy;
}

let browser: Browser;
const contexts: BrowserContext[] = [];
const proxies: RefusingProxy[] = [];

beforeAll(async () => {
  browser = await launchChromium();
});
afterAll(async () => {
  await browser?.close();
});
afterEach(async () => {
  await Promise.all(contexts.splice(0).map((c) => c.close()));
  await Promise.all(proxies.splice(0).map((p) => p.close()));
  await stopAll();
});

/** [topic, offset] of every event line in the dashboard's message log, oldest first. */
async function logOffsets(page: Page): Promise<[string, number][]> {
  const newestFirst = await page
    .getByTestId('log-entry')
    .evaluateAll((els) =>
      els.flatMap((e) => (e.hasAttribute('data-offset') ? [[e.getAttribute('data-topic') ?? '', Number(e.getAttribute('data-offset'))] as [string, number]] : [])),
    );
  return newestFirst.reverse();
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

describe('the dashboard where WebSockets are refused', () => {
  it('falls back to SSE, shows live events, and resumes a cut stream with no gap and no duplicate', async () => {
    const serve = await startClearpath('serve-sse', ['serve', '--grpc-port', '0', '--http-port', '0'], { core: true, bridge: true });
    const proxy = await refusingProxy(serve.url!);
    proxies.push(proxy);
    const context = await isolatedContext(browser, proxy.url);
    contexts.push(context);
    const page = await context.newPage();
    await page.goto(proxy.url + '/', WAIT);

    await page.locator('[data-testid="connection-state"][data-state="connected"]').waitFor(WAIT);
    await page.locator('[data-testid="topic-toggle-package_updates"][data-confirmed="true"]').waitFor(WAIT);
    expect(proxy.upgradesRefused).toBeGreaterThanOrEqual(2);
    expect(proxy.forwarded.some((u) => u.startsWith('/sse?topics='))).toBe(true);

    const frames = (from: number, n: number) => range(from, from + n - 1).map((i) => packageUpdate(`pkg-${i}`, `PKG${i}`));
    await publishMany(serve.core!, frames(1, 5));
    await expect.poll(async () => (await logOffsets(page)).map(([, o]) => o), WAIT).toEqual(range(1, 5));

    // The network drops the stream; events published meanwhile must arrive once, in order.
    expect(proxy.cut()).toBeGreaterThanOrEqual(1);
    await publishMany(serve.core!, frames(6, 5));
    await expect.poll(async () => (await logOffsets(page)).map(([, o]) => o), WAIT).toEqual(range(1, 10));
    const resumed = proxy.forwarded.filter((u) => u.startsWith('/sse?')).at(-1) ?? '';
    expect(decodeURIComponent(resumed)).toMatch(/since=package_updates:[^:&]+:5/);

    await publishMany(serve.core!, frames(11, 2));
    await expect.poll(async () => (await logOffsets(page)).map(([, o]) => o), WAIT).toEqual(range(1, 12));
    expect((await logOffsets(page)).every(([topic]) => topic === 'package_updates')).toBe(true);
    expect(proxy.upgradesRefused).toBeGreaterThanOrEqual(2);
  });
});
