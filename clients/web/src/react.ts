/**
 * `useWebSocket`: the React face of `RealtimeClient`.
 *
 * Components that pass the same URL share one client, hence one socket
 * (see `registry.ts`). The topics a component subscribes to, through the
 * `topics` option or `subscribe()`, are released when it unmounts; a topic
 * stays subscribed while any component holds it.
 */

import {
  createContext,
  createElement,
  useCallback,
  useContext,
  useEffect,
  useLayoutEffect,
  useMemo,
  useRef,
  useState,
  type ReactNode,
} from 'react';
import type { TokenSource } from './auth';
import { checkViewport, type ConnectionState, type ConnectionStatus, type RealtimeClient } from './client';
import { resolveInBrowser } from './endpoint';
import type { BoundingBox, ClientMessage, ServerFrame, Topic } from './frames';
import type { Gap } from './positions';
import { defaultRegistry, type ClientLease, type ClientRegistry, type SharedClientOptions } from './registry';

export interface UseWebSocketOptions {
  /** Endpoint: a `ws(s)://` URL, or a path such as `/ws/dashboard` resolved against the page. */
  url: string;
  /** Topics this component holds while mounted (changes are applied). */
  topics?: readonly Topic[];
  /** Called with every frame, from the socket's callback: no re-render needed, never stale. */
  onMessage?: (frame: ServerFrame) => void;
  /**
   * Called when events of a topic were lost (see `RealtimeClient.onGap`): the
   * bridge could not resume it, or the topic's history was lost upstream.
   */
  onGap?: (gap: Gap) => void;
  /** Keep `lastMessage` up to date (one re-render per frame). Default true; turn off for busy streams. */
  trackLastMessage?: boolean;
  /**
   * Bearer token for the bridge (see `RealtimeClientOptions.token`), used when
   * this component is the first to open `url` (as `clientOptions` are). A
   * function is called before every connection and refresh; the one of the
   * latest render is used, so an inline arrow function is fine. Overrides
   * `clientOptions.token`.
   */
  token?: TokenSource;
  /** Connect only while true. Default true. */
  enabled?: boolean;
  /** Options for the client, used when this component is the first to open `url`. */
  clientOptions?: SharedClientOptions;
  /** The registry to share clients through; default: the provider's, else a page-wide one. */
  registry?: ClientRegistry;
}

export interface UseWebSocketResult {
  state: ConnectionState;
  status: ConnectionStatus;
  isConnected: boolean;
  /** The last frame received (null until one arrives, or when `trackLastMessage` is false). */
  lastMessage: ServerFrame | null;
  /**
   * The last gap reported since this component mounted: events of
   * `lastGap.topic` before `lastGap.position` may be missing. Null: none.
   */
  lastGap: Gap | null;
  /** Sends a message if connected; returns whether it was sent. */
  sendMessage: (message: ClientMessage) => boolean;
  /** Holds `topic` for this component (released on unmount). */
  subscribe: (topic: Topic) => void;
  /** Releases `topic`; the client unsubscribes once no component holds it. */
  unsubscribe: (topic: Topic) => void;
  /** The topics the shared client has (any component's, and the endpoint's own). */
  subscriptions: Topic[];
  /** The subscription list the bridge last confirmed. */
  confirmedSubscriptions: Topic[];
  /**
   * Sets the box of the shared client's map_updates subscription (null: whole
   * world; see `RealtimeClient.setViewport`). Stable identity. Throws RangeError
   * for a bad box, which is then not kept (the previous box stays). The last
   * valid box this component set is applied again if the client is replaced
   * (URL change, remount); with several components on one client, the last call wins.
   */
  setViewport: (bbox: BoundingBox | null) => void;
  /** Starts the client again after `failed` or `closed`. */
  reconnect: () => void;
  /** The shared client, for what the hook does not cover (null until mounted). */
  client: RealtimeClient | null;
}

const RegistryContext = createContext<ClientRegistry | null>(null);

/** Makes the hooks below it share clients through `registry` (tests, micro-frontends). */
export function RealtimeProvider(props: { registry: ClientRegistry; children?: ReactNode }): ReactNode {
  return createElement(RegistryContext.Provider, { value: props.registry }, props.children);
}

function idleStatus(url: string): ConnectionStatus {
  return {
    state: 'idle',
    url,
    attempt: 0,
    maxAttempts: 0,
    retryDelayMs: null,
    connectionId: null,
    lastError: null,
    lastCloseCode: null,
    subject: null,
    expiresAt: null,
  };
}

const useIsomorphicLayoutEffect = typeof window === 'undefined' ? useEffect : useLayoutEffect;

export function useWebSocket(options: UseWebSocketOptions): UseWebSocketResult {
  const contextRegistry = useContext(RegistryContext);
  const registry = options.registry ?? contextRegistry ?? defaultRegistry;
  const url = useMemo(() => resolveInBrowser(options.url), [options.url]);
  const enabled = options.enabled ?? true;
  const track = options.trackLastMessage ?? true;

  const [status, setStatus] = useState<ConnectionStatus>(() => idleStatus(url));
  const [subscriptions, setSubscriptions] = useState<Topic[]>([]);
  const [confirmedSubscriptions, setConfirmed] = useState<Topic[]>([]);
  const [lastMessage, setLastMessage] = useState<ServerFrame | null>(null);
  const [lastGap, setLastGap] = useState<Gap | null>(null);
  const [client, setClient] = useState<RealtimeClient | null>(null);

  const onMessageRef = useRef(options.onMessage);
  const onGapRef = useRef(options.onGap);
  const trackRef = useRef(track);
  const clientOptionsRef = useRef(options.clientOptions);
  const tokenRef = useRef(options.token);
  useIsomorphicLayoutEffect(() => {
    tokenRef.current = options.token;
    onMessageRef.current = options.onMessage;
    onGapRef.current = options.onGap;
    trackRef.current = track;
    clientOptionsRef.current = options.clientOptions;
  });

  const leaseRef = useRef<ClientLease | null>(null);
  /**
   * The box this component last set, as `checkViewport` made it (undefined: none),
   * applied to a renewed lease's client. Only a box that passed the check is kept,
   * so applying it again in an effect cannot throw.
   */
  const viewportRef = useRef<BoundingBox | null | undefined>(undefined);
  /** Topics this component asked for with subscribe(): held again if the lease is renewed. */
  const heldRef = useRef(new Set<Topic>());
  const declared = options.topics ?? [];
  const declaredKey = declared.join(',');
  const declaredRef = useRef<readonly Topic[]>(declared);
  declaredRef.current = declared;

  useEffect(() => {
    if (!enabled) return undefined;
    const lease = registry.acquire(url, withToken(clientOptionsRef.current, tokenRef));
    leaseRef.current = lease;
    const c = lease.client;
    for (const topic of declaredRef.current) lease.hold(topic);
    for (const topic of heldRef.current) lease.hold(topic);
    if (viewportRef.current !== undefined) c.setViewport(viewportRef.current);
    const sync = (s: ConnectionStatus): void => {
      setStatus(s);
      const subs = c.subscriptions;
      setSubscriptions((prev) => (sameList(prev, subs) ? prev : subs));
      const confirmed = c.confirmedSubscriptions;
      setConfirmed((prev) => (sameList(prev, confirmed) ? prev : confirmed));
    };
    const offStatus = c.onStatus(sync);
    const offFrame = c.onFrame((frame) => {
      onMessageRef.current?.(frame);
      if (trackRef.current) setLastMessage(frame);
    });
    const offGap = c.onGap((gap) => {
      onGapRef.current?.(gap);
      setLastGap(gap);
    });
    setClient(c);
    sync(c.status);
    return () => {
      offStatus();
      offFrame();
      offGap();
      leaseRef.current = null;
      lease.dispose();
    };
  }, [registry, url, enabled]);

  // Apply changes of the declared topics without renewing the lease.
  const appliedRef = useRef<readonly Topic[]>([]);
  useEffect(() => {
    const lease = leaseRef.current;
    if (!lease) return;
    const next = declaredRef.current;
    for (const topic of appliedRef.current) {
      if (!next.includes(topic) && !heldRef.current.has(topic)) lease.release(topic);
    }
    for (const topic of next) lease.hold(topic);
    appliedRef.current = next;
  }, [declaredKey, client]);

  const subscribe = useCallback((topic: Topic) => {
    heldRef.current.add(topic);
    leaseRef.current?.hold(topic);
  }, []);

  const unsubscribe = useCallback((topic: Topic) => {
    heldRef.current.delete(topic);
    leaseRef.current?.release(topic, true);
  }, []);

  const sendMessage = useCallback((message: ClientMessage) => leaseRef.current?.client.send(message) ?? false, []);

  const setViewport = useCallback((bbox: BoundingBox | null) => {
    const box = checkViewport(bbox); // a bad box throws here, to the caller, and is not kept
    viewportRef.current = box;
    leaseRef.current?.client.setViewport(box);
  }, []);

  const reconnect = useCallback(() => {
    leaseRef.current?.client.connect();
  }, []);

  return {
    state: status.state,
    status,
    isConnected: status.state === 'connected',
    lastMessage,
    lastGap,
    sendMessage,
    subscribe,
    unsubscribe,
    subscriptions,
    confirmedSubscriptions,
    setViewport,
    reconnect,
    client,
  };
}

/** The client options with the hook's `token`; a token function reads the latest render's. */
function withToken(
  clientOptions: SharedClientOptions | undefined,
  tokenRef: { readonly current: TokenSource | undefined },
): SharedClientOptions | undefined {
  const token = tokenRef.current;
  if (token === undefined) return clientOptions;
  if (typeof token === 'string') return { ...clientOptions, token };
  const latest = (): string | Promise<string> => {
    const current = tokenRef.current ?? token;
    return typeof current === 'function' ? current() : current;
  };
  return { ...clientOptions, token: latest };
}

function sameList(a: readonly Topic[], b: readonly Topic[]): boolean {
  return a.length === b.length && a.every((t, i) => t === b[i]);
}
