/**
 * The dashboard's feed: frames arrive through `onMessage` (no re-render per
 * frame), are collected in a ref, and applied to React state at most every
 * FLUSH_MS. A busy stream (hundreds of events a second) thus costs a few
 * renders a second, not one per event. Each event's delivery latency is taken
 * as it arrives, not at the flush.
 */
import { useCallback, useEffect, useRef, useState } from 'react';
import type { ServerFrame, Topic } from '../frames';
import { useWebSocket, type UseWebSocketResult } from '../react';
import { latencySample, type LatencySample } from './latency';
import { applyFrames, initialState, type DashboardState } from './store';

export const FLUSH_MS = 250;
/** Apply at once past this many pending frames (a throttled background tab). */
const MAX_PENDING = 5_000;

export interface DashboardFeed {
  ws: UseWebSocketResult;
  state: DashboardState;
}

export function useDashboardFeed(
  endpoint: string,
  initialTopics: readonly Topic[],
  token?: string,
): DashboardFeed {
  const [state, setState] = useState(initialState);
  const pending = useRef<ServerFrame[]>([]);
  const samples = useRef<LatencySample[]>([]);
  const timer = useRef<ReturnType<typeof setTimeout> | null>(null);

  const flush = useCallback(() => {
    if (timer.current !== null) {
      clearTimeout(timer.current);
      timer.current = null;
    }
    const batch = pending.current;
    const latency = samples.current;
    pending.current = [];
    samples.current = [];
    setState((s) => applyFrames(s, batch, Date.now(), latency));
  }, []);

  const onMessage = useCallback(
    (frame: ServerFrame) => {
      pending.current.push(frame);
      const sample = latencySample(frame, Date.now());
      if (sample) samples.current.push(sample);
      if (pending.current.length >= MAX_PENDING) flush();
      else if (timer.current === null) timer.current = setTimeout(flush, FLUSH_MS);
    },
    [flush],
  );

  const ws = useWebSocket({ url: endpoint, onMessage, trackLastMessage: false, token });

  const initial = useRef(initialTopics);
  const { subscribe } = ws;
  useEffect(() => {
    for (const topic of initial.current) subscribe(topic);
  }, [subscribe]);

  // Keep the event rate honest when the stream goes quiet.
  useEffect(() => {
    const id = setInterval(() => {
      if (timer.current === null) flush();
    }, 1_000);
    return () => {
      clearInterval(id);
      if (timer.current !== null) clearTimeout(timer.current);
      timer.current = null;
    };
  }, [flush]);

  return { ws, state };
}
