/**
 * The built dashboard in real Chromium against `clearpath serve` with authentication
 * on (README "Security"; clients/web/README.md "Authentication"): the core and the
 * embedded bridge share an HMAC secret, the page gets its token from `?token=`, and
 * events are published over gRPC with a token that may publish.
 *
 * Every wait is bounded; the process is stopped (SIGTERM, then SIGKILL) after the block.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { isolatedContext, launchChromium } from './chromium';
import {
  ARTIFACTS,
  CLEARPATH_BIN,
  DIST_DIR,
  LinePublisher,
  clearpathAvailable,
  mintToken,
  packageUpdate,
  publishOne,
  startClearpath,
  stopAll,
  type Service,
} from './clearpath';

const WAIT = { timeout: 15_000 };
/** The bridge's auth timeout here (seconds; the default is 5). */
const AUTH_TIMEOUT_S = 1;

if (!clearpathAvailable()) throw new Error(`no clearpath at ${CLEARPATH_BIN}: run \`make setup\` (or set CLEARPATH_BIN)`);
if (!existsSync(join(DIST_DIR, 'index.html'))) throw new Error(`no dashboard build in ${DIST_DIR}: run \`npm -w clients/web run build\``);

/** A fresh secret per run: 32 random bytes, 43 characters. */
const SECRET = randomBytes(32).toString('base64url');

let browser: Browser;
const contexts: BrowserContext[] = [];

beforeAll(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  browser = await launchChromium();
});
afterAll(async () => {
  await browser?.close();
  await stopAll();
});
afterEach(async () => {
  await Promise.all(contexts.splice(0).map((c) => c.close()));
});

interface Opened {
  page: Page;
  /** Every console message (any level) and uncaught page error, as `type: text`. */
  console: string[];
  /** Requests that went anywhere but the bridge. */
  offsite: string[];
  /** URLs of the WebSockets the page opened. */
  sockets: string[];
}

/** A fresh context and page on `base + path`, allowed to reach nothing but `base`. */
async function open(base: string, path: string): Promise<Opened> {
  const context = await isolatedContext(browser, base);
  contexts.push(context);
  const page = await context.newPage();
  const opened: Opened = { page, console: [], offsite: [], sockets: [] };
  page.on('console', (m) => opened.console.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => opened.console.push(`pageerror: ${e.message}`));
  page.on('requestfailed', (r) => {
    if (!r.url().startsWith(base)) opened.offsite.push(r.url());
  });
  page.on('websocket', (ws) => opened.sockets.push(ws.url()));
  await page.goto(base + path, WAIT);
  return opened;
}

function state(page: Page, value: string) {
  return page.locator(`[data-testid="connection-state"][data-state="${value}"]`);
}

async function waitSubscribed(page: Page, topic: string): Promise<void> {
  await page.locator(`[data-testid="topic-toggle-${topic}"][data-confirmed="true"]`).waitFor(WAIT);
}

function row(page: Page, packageId: string) {
  return page.locator(`[data-testid="package-row"][data-package-id="${packageId}"]`);
}

/** Everything of the page a person or a script could read: its text, its markup (attributes too), its URL. */
async function pageShows(page: Page): Promise<string> {
  const [text, html] = await Promise.all([page.evaluate(() => document.body.innerText), page.content()]);
  return `${page.url()}\n${text}\n${html}`;
}

describe('dashboard with authentication on', () => {
  let serve: Service;
  /** May publish package_updates, nothing else. */
  let publisherToken: string;

  beforeAll(async () => {
    [serve, publisherToken] = await Promise.all([
      startClearpath('serve-auth', ['serve', '--grpc-port', '0', '--http-port', '0'], { core: true, bridge: true }, {
        CLEARPATH_CORE_AUTH_SECRET: SECRET,
        CLEARPATH_BRIDGE_AUTH_SECRET: SECRET,
        CLEARPATH_BRIDGE_AUTH_TIMEOUT: String(AUTH_TIMEOUT_S),
      }),
      mintToken(SECRET, 'scanner-e2e', { publish: 'package_updates', ttl: '1h' }),
    ]);
    // Authentication really is on at the core: a publish without a token is refused.
    await expect(publishOne(serve.core!, packageUpdate('anon-1', 'ANON-1'))).rejects.toThrow(/UNAUTHENTICATED|unauthenticated/i);
  });
  afterAll(async () => {
    await serve?.stop();
    // The token never reached the bridge's or the core's log (the page's own request was `/?token=…`).
    expect(serve.log()).not.toContain(publisherToken);
  });

  it('?token= connects, leaves the address bar, and events published over gRPC appear; the token shows nowhere', async () => {
    const viewer = await mintToken(SECRET, 'viewer', { ttl: '1h' });
    const { page, console: messages, offsite, sockets } = await open(serve.url!, `/?token=${viewer}`);
    await state(page, 'connected').waitFor(WAIT);
    await waitSubscribed(page, 'package_updates');
    // Out of the address bar (and the history entry), kept for this tab only.
    expect(page.url()).toBe(`${serve.url}/`);
    expect(page.url()).not.toContain('token=');
    expect(await page.evaluate(() => sessionStorage.getItem('clearpath.token'))).toBe(viewer);
    expect(await page.evaluate(() => localStorage.length)).toBe(0);
    // Given in the first message, never in the socket's URL.
    expect(sockets).toHaveLength(1);
    expect(sockets[0]).not.toContain('token');

    const publisher = new LinePublisher(serve.core!, publisherToken);
    try {
      for (let i = 1; i <= 3; i++) publisher.send(packageUpdate(`auth-${i}`, `AUTH-${i}`));
      for (let i = 1; i <= 3; i++) await row(page, `auth-${i}`).waitFor(WAIT);
    } finally {
      await publisher.close();
    }
    expect(await row(page, 'auth-2').textContent()).toContain('Chicago Distribution Center');
    expect(await page.getByTestId('connection-state').textContent()).toBe('Connected');
    expect(await page.getByTestId('connection-error').count()).toBe(0);
    expect(await page.getByTestId('last-error').count()).toBe(0);
    const signature = viewer.split('.')[2]!;
    expect(await pageShows(page)).not.toContain(signature);

    // A reload (no token in the URL any more) authenticates again from sessionStorage.
    await page.reload(WAIT);
    await state(page, 'connected').waitFor(WAIT);
    await waitSubscribed(page, 'package_updates');
    await publishOne(serve.core!, packageUpdate('auth-4', 'AUTH-4'), publisherToken);
    await row(page, 'auth-4').waitFor(WAIT);
    expect(page.url()).toBe(`${serve.url}/`);
    expect(sockets).toHaveLength(2);

    // Neither the whole token nor its signature anywhere on the page or in the console.
    const shown = await pageShows(page);
    expect(shown).not.toContain(viewer);
    expect(shown).not.toContain(signature);
    expect(messages.filter((m) => m.includes(signature))).toEqual([]);
    expect(messages.filter((m) => m.startsWith('error') || m.startsWith('pageerror'))).toEqual([]);
    expect(offsite).toEqual([]);
    expect(serve.log()).not.toContain(signature);
    await page.screenshot({ path: join(ARTIFACTS, 'auth-connected.png') });
  });

  it('without a token: closed 4008 after the auth timeout, shown as failed with the reason, and no events', async () => {
    const publisher = new LinePublisher(serve.core!, publisherToken);
    try {
      const openedAt = Date.now();
      const { page, console: messages, offsite, sockets } = await open(serve.url!, '/');
      // While the socket is open but unauthenticated, events go on being published.
      for (let i = 1; i <= 3; i++) publisher.send(packageUpdate(`anon-page-${i}`, `ANON-PAGE-${i}`));
      await state(page, 'failed').waitFor({ timeout: AUTH_TIMEOUT_S * 1000 + 9_000 });
      const failedAfter = Date.now() - openedAt;
      expect(failedAfter).toBeGreaterThanOrEqual(AUTH_TIMEOUT_S * 1000 - 100);

      await expect.poll(() => page.getByTestId('connection-state').textContent(), WAIT).toBe('Disconnected: gave up');
      const reason = page.getByTestId('connection-error');
      await reason.waitFor(WAIT);
      expect(await reason.isVisible()).toBe(true);
      const why = await reason.textContent();
      expect(why).toContain('closed by server (4008 authentication timed out');
      expect(why).toContain(`no auth message within ${AUTH_TIMEOUT_S}s`);
      expect(await page.getByTestId('retry-button').isVisible()).toBe(true);
      expect(await page.locator('[data-testid^="topic-toggle-"][data-confirmed="true"]').count()).toBe(0);
      // The bridge's error frames: every subscribe refused until authenticated, then the timeout.
      const banner = page.locator('[data-testid="last-error"][data-code="auth_timeout"]');
      await banner.waitFor(WAIT);
      expect(await banner.textContent()).toContain('no auth message within');
      const errors = await page.locator('[data-testid="log-entry"][data-type="error"]').allTextContents();
      expect(errors.some((e) => e.includes('unauthorized'))).toBe(true);

      // It stays failed: no reconnection with nothing better to offer, and no events, old or new.
      publisher.send(packageUpdate('anon-page-4', 'ANON-PAGE-4'));
      await page.waitForTimeout(1_500);
      expect(await page.getByTestId('connection-state').getAttribute('data-state')).toBe('failed');
      expect(sockets).toHaveLength(1);
      expect(await page.getByTestId('package-row').count()).toBe(0);
      expect(await page.locator('[data-testid="log-entry"][data-type="package_update"]').count()).toBe(0);
      expect(await page.getByTestId('message-log').getAttribute('data-total')).toBe(String(await page.locator('[data-testid="log-entry"]').count()));
      console.log(`no token: failed ${failedAfter} ms after opening the page: ${why}`);
      await page.screenshot({ path: join(ARTIFACTS, 'auth-no-token.png') });
      expect(messages.filter((m) => m.startsWith('error') || m.startsWith('pageerror'))).toEqual([]);
      expect(offsite).toEqual([]);
    } finally {
      await publisher.close();
    }
  });

  it('a static token that expires while the page is open: closed 4003 at its exp, shown as failed', async () => {
    const viewer = await mintToken(SECRET, 'viewer-short', { ttl: '6s' });
    const exp = JSON.parse(Buffer.from(viewer.split('.')[1]!, 'base64url').toString('utf8')).exp as number;
    const { page, console: messages, offsite, sockets } = await open(serve.url!, `/?token=${viewer}`);
    await state(page, 'connected').waitFor(WAIT);
    await waitSubscribed(page, 'package_updates');
    expect(Date.now()).toBeLessThan(exp * 1000);
    await publishOne(serve.core!, packageUpdate('short-1', 'SHORT-1'), publisherToken);
    await row(page, 'short-1').waitFor(WAIT);

    await state(page, 'failed').waitFor({ timeout: Math.max(0, exp * 1000 - Date.now()) + 5_000 });
    const lateMs = Date.now() - exp * 1000;
    // Not before its exp (a little slack for this poll), and soon after.
    expect(lateMs).toBeGreaterThan(-250);
    expect(await page.getByTestId('connection-state').textContent()).toBe('Disconnected: gave up');
    const why = await page.getByTestId('connection-error').textContent();
    expect(why).toContain('closed by server (4003 token expired');
    expect(await page.getByTestId('retry-button').isVisible()).toBe(true);
    await page.locator('[data-testid="last-error"][data-code="token_expired"]').waitFor(WAIT);
    console.log(`expired token: failed ${lateMs} ms after its exp: ${why}`);

    // A static token cannot get better: no reconnection, and later events do not arrive.
    await publishOne(serve.core!, packageUpdate('short-2', 'SHORT-2'), publisherToken);
    await page.waitForTimeout(750);
    expect(await page.getByTestId('connection-state').getAttribute('data-state')).toBe('failed');
    expect(sockets).toHaveLength(1);
    expect(await row(page, 'short-2').count()).toBe(0);
    expect(await row(page, 'short-1').count()).toBe(1);

    const signature = viewer.split('.')[2]!;
    expect(await pageShows(page)).not.toContain(signature);
    expect(messages.filter((m) => m.includes(signature))).toEqual([]);
    expect(messages.filter((m) => m.startsWith('error') || m.startsWith('pageerror'))).toEqual([]);
    expect(offsite).toEqual([]);
    await page.screenshot({ path: join(ARTIFACTS, 'auth-expired.png') });
  });
});
