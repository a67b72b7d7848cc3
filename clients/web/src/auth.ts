/**
 * Authentication helpers: the token option, the bridge's auth close codes,
 * and when to refresh a token ahead of its expiry.
 *
 * The client authenticates with an `auth` message, the first it sends on a
 * socket (`{"type":"auth","data":{"token":"<JWT>"}}`), and refreshes in place
 * with `refresh`; see `client.ts`. Nothing here logs or keeps a token.
 */

/**
 * A bearer token (a JWT), or a function giving one. A function is called
 * before every connection and every refresh, so each uses a fresh token; only
 * with a function can the client refresh before the token expires.
 */
export type TokenSource = string | (() => string | Promise<string>);

/** Close code: the token is missing or invalid, or a refresh named another subject. */
export const CLOSE_UNAUTHORIZED = 4001;
/** Close code: the token expired while connected. */
export const CLOSE_TOKEN_EXPIRED = 4003;
/** Close code: no `auth` message came within the bridge's auth timeout. */
export const CLOSE_AUTH_TIMEOUT = 4008;
/** Close code: policy violation (sustained abuse, e.g. too many messages). */
export const CLOSE_POLICY_VIOLATION = 1008;

/** A short name for the close codes with a meaning for authentication; null for others. */
export function authCloseLabel(code: number): string | null {
  switch (code) {
    case CLOSE_UNAUTHORIZED:
      return 'unauthorized';
    case CLOSE_TOKEN_EXPIRED:
      return 'token expired';
    case CLOSE_AUTH_TIMEOUT:
      return 'authentication timed out';
    case CLOSE_POLICY_VIOLATION:
      return 'policy violation';
    default:
      return null;
  }
}

/** Refreshes go out at most this long before expiry. */
export const REFRESH_LEAD_MAX_MS = 60_000;
/** ... and at most this share of the remaining lifetime before it. */
export const REFRESH_LEAD_SHARE = 0.1;

/**
 * Milliseconds from `nowMs` until a token expiring at `expiresAt` (unix
 * seconds) should be refreshed: `remaining - min(60 s, 10% of remaining)`.
 * Null when it has already expired (or `expiresAt` is not a number).
 */
export function refreshDelayMs(expiresAt: number, nowMs: number): number | null {
  if (!Number.isFinite(expiresAt)) return null;
  const remaining = expiresAt * 1000 - nowMs;
  if (!(remaining > 0)) return null;
  return remaining - Math.min(REFRESH_LEAD_MAX_MS, remaining * REFRESH_LEAD_SHARE);
}

/**
 * The `exp` claim (unix seconds) of a JWT, read from its base64url payload
 * without checking the signature. Null for anything that is not a JWT with
 * a numeric `exp`; never throws.
 */
export function jwtExpiry(token: string | null | undefined): number | null {
  if (typeof token !== 'string') return null;
  const parts = token.split('.');
  if (parts.length !== 3 || !parts[1]) return null;
  const json = decodeBase64Url(parts[1]);
  if (json === null) return null;
  try {
    const payload: unknown = JSON.parse(json);
    if (typeof payload !== 'object' || payload === null) return null;
    const exp = (payload as Record<string, unknown>)['exp'];
    return typeof exp === 'number' && Number.isFinite(exp) && exp > 0 ? exp : null;
  } catch {
    return null;
  }
}

function decodeBase64Url(text: string): string | null {
  if (!/^[A-Za-z0-9_-]+={0,2}$/.test(text)) return null;
  const bare = text.replace(/=+$/, '');
  if (bare.length % 4 === 1) return null;
  const base64 = bare.replace(/-/g, '+').replace(/_/g, '/') + '='.repeat((4 - (bare.length % 4)) % 4);
  try {
    const binary = atob(base64);
    const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    return null;
  }
}
