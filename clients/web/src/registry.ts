/**
 * Shared, reference-counted clients: every user of one endpoint URL gets the
 * same `RealtimeClient`, hence one socket.
 *
 * A user takes a `ClientLease`. Through it, it holds topics; a topic stays
 * subscribed while any lease holds it. When the last lease of a URL is
 * disposed, the client is closed (after `lingerMs`, so a lease taken right
 * away again — React's StrictMode remounts, a route change — reuses it).
 */

import { RealtimeClient, type RealtimeClientOptions, type Timers } from './client';
import type { Topic } from './frames';

export type SharedClientOptions = Omit<RealtimeClientOptions, 'url' | 'topics' | 'autoConnect'>;

export interface ClientRegistryOptions {
  /** Options for every client this registry makes (a lease's own options win for a new client). */
  clientOptions?: SharedClientOptions;
  /** How long a client with no lease stays open. Default 0 (closed on the next tick). */
  lingerMs?: number;
  /** Timers for the linger; defaults to the client options' timers, else the global ones. */
  timers?: Timers;
}

/** One user's share of a client. */
export interface ClientLease {
  readonly client: RealtimeClient;
  /** Holds `topic`: subscribes the client if no one held it. Idempotent per lease. */
  hold(topic: Topic): void;
  /**
   * Lets go of `topic`. When no lease holds it any more, the client
   * unsubscribes, except (unless `explicit`) from a topic the endpoint
   * subscribed on its own: a component that unmounts should not undo the
   * endpoint's defaults, a user who switches a topic off should.
   */
  release(topic: Topic, explicit?: boolean): void;
  /** The topics this lease holds. */
  readonly topics: ReadonlySet<Topic>;
  /** Releases every topic and the lease itself. Idempotent. */
  dispose(): void;
}

interface Entry {
  client: RealtimeClient;
  leases: Set<Lease>;
  holds: Map<Topic, number>;
  closeTimer: unknown;
}

const globalTimers: Timers = {
  setTimeout: (callback, ms) => globalThis.setTimeout(callback, ms),
  clearTimeout: (handle) => globalThis.clearTimeout(handle as ReturnType<typeof globalThis.setTimeout>),
};

class Lease implements ClientLease {
  readonly topics = new Set<Topic>();
  disposed = false;

  constructor(
    private readonly registry: ClientRegistry,
    private readonly entry: Entry,
  ) {}

  get client(): RealtimeClient {
    return this.entry.client;
  }

  hold(topic: Topic): void {
    if (this.disposed || this.topics.has(topic)) return;
    this.topics.add(topic);
    const count = this.entry.holds.get(topic) ?? 0;
    this.entry.holds.set(topic, count + 1);
    this.entry.client.subscribe(topic);
  }

  release(topic: Topic, explicit = false): void {
    if (this.disposed) return;
    const held = this.topics.delete(topic);
    const count = (this.entry.holds.get(topic) ?? 0) - (held ? 1 : 0);
    if (count > 0) {
      this.entry.holds.set(topic, count);
      return;
    }
    this.entry.holds.delete(topic);
    const endpointDefault = this.entry.client.endpointSubscriptions.includes(topic);
    if (explicit || (held && !endpointDefault)) this.entry.client.unsubscribe(topic);
  }

  dispose(): void {
    if (this.disposed) return;
    for (const topic of [...this.topics]) this.release(topic, false);
    this.disposed = true;
    this.registry.leaseDisposed(this.entry, this);
  }
}

export class ClientRegistry {
  private readonly entries = new Map<string, Entry>();
  private readonly clientOptions: SharedClientOptions;
  private readonly lingerMs: number;
  private readonly timers: Timers;

  constructor(options: ClientRegistryOptions = {}) {
    this.clientOptions = options.clientOptions ?? {};
    this.lingerMs = options.lingerMs ?? 0;
    this.timers = options.timers ?? options.clientOptions?.timers ?? globalTimers;
  }

  /** Takes a lease on the client of `url`, making and connecting it if needed. */
  acquire(url: string, options: SharedClientOptions = {}): ClientLease {
    let entry = this.entries.get(url);
    if (!entry) {
      const client = new RealtimeClient({ ...this.clientOptions, ...options, url });
      entry = { client, leases: new Set(), holds: new Map(), closeTimer: null };
      this.entries.set(url, entry);
    }
    if (entry.closeTimer !== null) {
      this.timers.clearTimeout(entry.closeTimer);
      entry.closeTimer = null;
    }
    const lease = new Lease(this, entry);
    entry.leases.add(lease);
    const state = entry.client.state;
    if (state === 'idle' || state === 'closed') entry.client.connect();
    return lease;
  }

  /** The client of `url`, if one is open. */
  peek(url: string): RealtimeClient | undefined {
    return this.entries.get(url)?.client;
  }

  /** How many leases `url`'s client has. */
  leaseCount(url: string): number {
    return this.entries.get(url)?.leases.size ?? 0;
  }

  /** Closes every client at once (for tests and page teardown). */
  closeAll(): void {
    for (const [url, entry] of this.entries) {
      if (entry.closeTimer !== null) this.timers.clearTimeout(entry.closeTimer);
      entry.client.close();
      this.entries.delete(url);
    }
  }

  /** @internal */
  leaseDisposed(entry: Entry, lease: Lease): void {
    entry.leases.delete(lease);
    if (entry.leases.size > 0 || entry.closeTimer !== null) return;
    entry.closeTimer = this.timers.setTimeout(() => {
      entry.closeTimer = null;
      if (entry.leases.size > 0) return;
      entry.client.close();
      if (this.entries.get(entry.client.url) === entry) this.entries.delete(entry.client.url);
    }, this.lingerMs);
  }
}

/** The registry the React hook uses unless given another. */
export const defaultRegistry = new ClientRegistry({ lingerMs: 1000 });
