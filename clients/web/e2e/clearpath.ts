/**
 * The real ClearPath Realtime processes for the end-to-end tests: `clearpath serve`
 * (core + bridge, optionally the simulator), `clearpath serve --no-bridge` and
 * `clearpath bridge`, started with child_process and stopped with SIGTERM, then
 * SIGKILL after a bound. Ports are read back from the log lines
 * `core listening on HOST:PORT` and `bridge listening on http://HOST:PORT`.
 *
 * Events are published over gRPC with the CLI (`clearpath publish`).
 * Every wait here is bounded; every process started is stopped by `stopAll()`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
/** `$CLEARPATH_BIN`, else the repository's venv. */
export const CLEARPATH_BIN = process.env['CLEARPATH_BIN'] ?? join(REPO_ROOT, '.venv', 'bin', 'clearpath');
/** The dashboard build the bridge serves at `/` (`npm run e2e` builds it first). */
export const DIST_DIR = fileURLToPath(new URL('../dist/', import.meta.url));
export const ARTIFACTS = join(REPO_ROOT, 'test-artifacts', 'web');
const LOGS = join(ARTIFACTS, 'logs');

const START_TIMEOUT_MS = 30_000;
const TERM_GRACE_MS = 5_000;
const KILL_GRACE_MS = 3_000;
const CLI_TIMEOUT_MS = 30_000;

/** Variables a test sets for one child (e.g. `CLEARPATH_CORE_AUTH_SECRET`, `CLEARPATH_TOKEN`). */
export type ExtraEnv = Readonly<Record<string, string>>;

/**
 * Environment for every child: the dashboard build, and nothing that would bend the
 * settings or the credentials (no inherited `CLEARPATH_CORE*`, `CLEARPATH_BRIDGE_*`,
 * `CLEARPATH_TOKEN`, `CLEARPATH_AUTH_SECRET`), then what the test asks for in `extra`.
 */
function childEnv(extra: ExtraEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith('CLEARPATH_CORE') || k.startsWith('CLEARPATH_BRIDGE_')) continue;
    if (k === 'CLEARPATH_TOKEN' || k === 'CLEARPATH_AUTH_SECRET') continue;
    env[k] = v;
  }
  env['CLEARPATH_BRIDGE_STATIC_DIR'] = DIST_DIR;
  env['PYTHONUNBUFFERED'] = '1';
  return { ...env, ...extra };
}

export function clearpathAvailable(): boolean {
  return existsSync(CLEARPATH_BIN);
}

/** A running `clearpath` process. */
export interface Service {
  readonly name: string;
  readonly child: ChildProcess;
  /** `HOST:PORT` of the core's gRPC server, when this process runs one. */
  readonly core: string | undefined;
  /** `http://HOST:PORT` of the bridge, when this process runs one. */
  readonly url: string | undefined;
  /** Everything written to stderr so far. */
  log(): string;
  readonly exited: boolean;
  /** SIGTERM, then SIGKILL if still alive after TERM_GRACE_MS; resolves once it is gone. */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

const running = new Set<Service>();

function exitOf(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((done) => child.once('exit', () => done()));
}

function within<T>(promise: Promise<T>, ms: number): Promise<T | 'timeout'> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<'timeout'>((done) => {
    timer = setTimeout(() => done('timeout'), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function saveLog(name: string, text: string): void {
  mkdirSync(LOGS, { recursive: true });
  writeFileSync(join(LOGS, `${name}.log`), text);
}

/**
 * Starts `clearpath ARGS` and waits (at most START_TIMEOUT_MS) until it has logged
 * every listening line in `expect`. A process that exits first, or is too slow, fails the start.
 */
export async function startClearpath(
  name: string,
  args: string[],
  expect: { core?: boolean; bridge?: boolean },
  env: ExtraEnv = {},
): Promise<Service> {
  const child = spawn(CLEARPATH_BIN, ['--log-level', 'INFO', ...args], {
    cwd: REPO_ROOT,
    env: childEnv(env),
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  let core: string | undefined;
  let url: string | undefined;
  const exited = exitOf(child);
  const ready = new Promise<void>((resolve, reject) => {
    const check = () => {
      core ??= /core listening on (\S+)/.exec(stderr)?.[1];
      url ??= /bridge listening on (http:\/\/\S+)/.exec(stderr)?.[1];
      if ((!expect.core || core) && (!expect.bridge || url)) resolve();
    };
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (chunk: string) => {
      stderr += chunk;
      check();
    });
    child.once('error', reject);
    void exited.then(() => reject(new Error(`${name} exited (${child.exitCode ?? child.signalCode}) before it was ready:\n${stderr}`)));
  });

  let stopping: Promise<void> | null = null;
  const service: Service = {
    name,
    child,
    get core() {
      return core;
    },
    get url() {
      return url;
    },
    log: () => stderr,
    get exited() {
      return child.exitCode !== null || child.signalCode !== null;
    },
    stop(signal: NodeJS.Signals = 'SIGTERM') {
      stopping ??= (async () => {
        if (!service.exited) {
          child.kill(signal);
          if ((await within(exited, TERM_GRACE_MS)) === 'timeout') {
            child.kill('SIGKILL');
            if ((await within(exited, KILL_GRACE_MS)) === 'timeout') {
              throw new Error(`${name} (pid ${child.pid}) survived SIGKILL for ${KILL_GRACE_MS} ms`);
            }
          }
        }
        running.delete(service);
        saveLog(name, stderr);
      })();
      return stopping;
    },
  };
  running.add(service);
  try {
    if ((await within(ready, START_TIMEOUT_MS)) === 'timeout') {
      throw new Error(`${name} did not log its listening address(es) within ${START_TIMEOUT_MS} ms:\n${stderr}`);
    }
  } catch (err) {
    await service.stop('SIGKILL');
    throw err;
  }
  return service;
}

/** Stops every process still running but those in `keep` (for afterEach/afterAll). */
export async function stopAll(keep: ReadonlySet<Service> = new Set()): Promise<void> {
  await Promise.all([...running].filter((s) => !keep.has(s)).map((s) => s.stop()));
}

// A test runner that dies must not leave servers behind.
process.once('exit', () => {
  for (const s of running) if (!s.exited) s.child.kill('SIGKILL');
});

/** A TCP port that was free a moment ago on 127.0.0.1 (for a bridge that must come back on the same URL). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** Runs a short-lived `clearpath` command; rejects on a non-zero exit or after CLI_TIMEOUT_MS. */
export function runClearpath(args: string[], input?: string, env: ExtraEnv = {}): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(CLEARPATH_BIN, args, { cwd: REPO_ROOT, env: childEnv(env), stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`clearpath ${args.join(' ')} took more than ${CLI_TIMEOUT_MS} ms:\n${stderr}`));
    }, CLI_TIMEOUT_MS);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve({ stdout, stderr });
      else reject(new Error(`clearpath ${args.join(' ')} exited ${code}:\n${stderr}${stdout}`));
    });
    child.stdin.end(input ?? '');
  });
}

export interface EventFrame {
  type: string;
  data: Record<string, unknown>;
}

export interface Published {
  id: string;
  subscription_type: string;
  position: { offset: number; epoch: string };
}

/** The environment of a publisher with `token` (in `$CLEARPATH_TOKEN`, not on its command line). */
function tokenEnv(token: string | undefined): ExtraEnv {
  return token === undefined ? {} : { CLEARPATH_TOKEN: token };
}

/** `clearpath publish --json FRAME`: one event over gRPC; resolves with its position. */
export async function publishOne(core: string, frame: EventFrame, token?: string): Promise<Published> {
  const { stdout } = await runClearpath(['publish', '--core', core, '--json', JSON.stringify(frame)], undefined, tokenEnv(token));
  return JSON.parse(stdout.trim()) as Published;
}

/** `clearpath publish --stdin`: many events in one Publish call (one process). */
export async function publishMany(core: string, frames: EventFrame[], token?: string): Promise<void> {
  const { stdout } = await runClearpath(
    ['publish', '--core', core, '--stdin'],
    frames.map((f) => JSON.stringify(f)).join('\n') + '\n',
    tokenEnv(token),
  );
  if (!stdout.includes(`published ${frames.length} events`)) throw new Error(`unexpected publish output: ${stdout}`);
}

/**
 * A long-lived `clearpath publish --stdin --batch-size 1`: each line written is
 * published at once, without a process start in between, so the time from
 * `send()` to the event on the page is the system's latency, not Python's start-up.
 */
export class LinePublisher {
  private readonly child: ChildProcess;
  private stderr = '';
  private readonly exited: Promise<void>;

  /** `token`: a bearer token with publish rights, for a core with authentication on. */
  constructor(core: string, token?: string) {
    this.child = spawn(CLEARPATH_BIN, ['publish', '--core', core, '--stdin', '--batch-size', '1'], {
      cwd: REPO_ROOT,
      env: childEnv(tokenEnv(token)),
      stdio: ['pipe', 'ignore', 'pipe'],
    });
    this.child.stderr!.setEncoding('utf8').on('data', (c: string) => (this.stderr += c));
    this.exited = exitOf(this.child);
  }

  /** Writes one event; returns the wall-clock time (ms) it was handed over. */
  send(frame: EventFrame): number {
    if (this.child.exitCode !== null) throw new Error(`the publisher exited: ${this.stderr}`);
    const at = Date.now();
    this.child.stdin!.write(JSON.stringify(frame) + '\n');
    return at;
  }

  /** Ends input and waits (bounded) for the publisher to exit; throws if it failed. */
  async close(): Promise<void> {
    this.child.stdin!.end();
    if ((await within(this.exited, TERM_GRACE_MS)) === 'timeout') {
      this.child.kill('SIGKILL');
      await within(this.exited, KILL_GRACE_MS);
      throw new Error(`the publisher did not exit after its input ended:\n${this.stderr}`);
    }
    if (this.child.exitCode !== 0) throw new Error(`the publisher exited ${this.child.exitCode}:\n${this.stderr}`);
  }
}

/**
 * `clearpath token --subject SUBJECT ...`: a JWT signed with `secret` (given in
 * `$CLEARPATH_AUTH_SECRET`, not on the command line). `options` are the CLI's flags
 * without their dashes, e.g. `{ publish: 'package_updates', ttl: '1h' }`.
 */
export async function mintToken(
  secret: string,
  subject: string,
  options: { subscribe?: string; publish?: string; operator?: boolean; ttl?: string } = {},
): Promise<string> {
  const args = ['token', '--subject', subject];
  if (options.subscribe !== undefined) args.push('--subscribe', options.subscribe);
  if (options.publish !== undefined) args.push('--publish', options.publish);
  if (options.operator) args.push('--operator');
  if (options.ttl !== undefined) args.push('--ttl', options.ttl);
  const { stdout } = await runClearpath(args, undefined, { CLEARPATH_AUTH_SECRET: secret });
  const token = stdout.trim();
  if (!/^[\w-]+\.[\w-]+\.[\w-]+$/.test(token)) throw new Error(`clearpath token printed no JWT: ${stdout}`);
  return token;
}

/** A package_update event frame. */
export function packageUpdate(packageId: string, trackingNumber: string, status = 'in_transit'): EventFrame {
  return {
    type: 'package_update',
    data: {
      package_id: packageId,
      tracking_number: trackingNumber,
      status,
      location: 'Chicago Distribution Center',
      carrier: 'FedEx',
    },
  };
}
