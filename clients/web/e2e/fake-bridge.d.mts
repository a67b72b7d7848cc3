/** Types of `fake-bridge.mjs` (kept in JS so that it runs with plain `node`). */
export declare const TOPICS: string[];
export declare const ENDPOINTS: Record<string, string[]>;

export interface FakeBridgeOptions {
  port?: number;
  distDir?: string;
  /** Simulated events per second. Default 50. */
  rate?: number;
  /** Seconds, announced in `welcome`. Default 20. */
  pingInterval?: number;
  seed?: number;
}

export interface FakeBridge {
  port: number;
  /** `http://127.0.0.1:<port>` */
  url: string;
  /** The current epoch of every topic (changed by `resetHistory`). */
  readonly epoch: string;
  setRate(eventsPerSecond: number): void;
  publish(events: { type: string; data: Record<string, unknown> }[]): void;
  offsets(): Record<string, number>;
  connectionCount(): number;
  dropAll(code?: number, reason?: string): void;
  killAll(): void;
  /** A new epoch for every topic, announced to every connection as the real bridge does. */
  resetHistory(): void;
  refuse(value: boolean): void;
  close(): Promise<void>;
}

export declare function startFakeBridge(options?: FakeBridgeOptions): Promise<FakeBridge>;
