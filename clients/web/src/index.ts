/** The public surface of `@clearpath/web`: the client, the hook, the frame types. */
export { RealtimeClient, CLIENT_GAVE_UP, checkViewport } from './client';
export type {
  ClientStats,
  ConnectionState,
  ConnectionStatus,
  RealtimeClientOptions,
  Timers,
  Transport,
  WebSocketFactory,
  WebSocketLike,
} from './client';
export { ENDPOINT_TOPICS, SSE_LOST, SseSocket, parsePositions, sseUrl, streamUrl } from './sse';
export type { EventSourceFactory, EventSourceLike, SseOptions } from './sse';
export {
  CLOSE_AUTH_TIMEOUT,
  CLOSE_POLICY_VIOLATION,
  CLOSE_TOKEN_EXPIRED,
  CLOSE_UNAUTHORIZED,
  authCloseLabel,
  jwtExpiry,
  refreshDelayMs,
} from './auth';
export type { TokenSource } from './auth';
export { DEFAULT_BACKOFF, backoffDelay, baseDelay, delayBounds, resolveBackoff } from './backoff';
export type { BackoffOptions, ResolvedBackoff } from './backoff';
export { ClientRegistry, defaultRegistry } from './registry';
export type { ClientLease, ClientRegistryOptions, SharedClientOptions } from './registry';
export { RealtimeProvider, useWebSocket } from './react';
export type { UseWebSocketOptions, UseWebSocketResult } from './react';
export { DEFAULT_ENDPOINT, endpointFromPage, resolveEndpoint, withSince } from './endpoint';
export { Cursor, inferReason, isGapReason, isNew } from './positions';
export type { Confirmation, Gap } from './positions';
export * from './frames';
