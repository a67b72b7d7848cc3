/**
 * Positions in a topic's stream and the rules of resuming: the TypeScript twin
 * of `core/positions.py` (Python). Pure: no I/O, no timers; tested with plain
 * calls in `test/positions.test.ts`.
 *
 * A position is `{offset, epoch}`. Within an epoch offsets only grow; the
 * epoch changes when the topic's history is lost (e.g. an in-memory core
 * restarted), and offsets of two epochs say nothing about each other.
 */

import { GAP_REASONS, type GapReason, type StreamPosition, type Topic } from './frames';

export { GAP_REASONS };
export type { GapReason, StreamPosition };

/**
 * True when an event at `p` is new to a reader whose last position is `last`:
 * nothing seen yet, another epoch, or a larger offset in the same epoch.
 */
export function isNew(p: StreamPosition, last: StreamPosition | null | undefined): boolean {
  return last == null || p.epoch !== last.epoch || p.offset > last.offset;
}

/** What a `subscribed` frame says about a topic's stream (see `SubscribedData`). */
export interface Confirmation {
  recovered: boolean;
  position: StreamPosition | null;
  reason?: string | undefined;
}

/** Events of `topic` after `since` could not all be delivered. */
export interface Gap {
  topic: Topic;
  /** The cursor before the notice: the last position this reader had (null: none). */
  since: StreamPosition | null;
  /** Where the stream continues: every event that follows comes after it (null: the bridge did not say). */
  position: StreamPosition | null;
  reason: GapReason;
}

/** The reason for a gap notice that gave none or an unknown one (a bridge older or newer than this client). */
export function inferReason(since: StreamPosition | null, position: StreamPosition | null): GapReason {
  if (since === null || position === null || since.epoch !== position.epoch) return 'epoch_changed';
  return since.offset > position.offset ? 'position_ahead' : 'history_trimmed';
}

/** True for one of the reasons this client knows (`GAP_REASONS`). */
export function isGapReason(value: unknown): value is GapReason {
  return typeof value === 'string' && (GAP_REASONS as readonly string[]).includes(value);
}

/** Where one reader stands in one topic's stream: drops duplicates, turns confirmations into gaps. */
export class Cursor {
  private last: StreamPosition | null;

  constructor(
    readonly topic: Topic,
    position: StreamPosition | null = null,
  ) {
    this.last = copy(position);
  }

  /** A copy of the current position (null: nothing known yet). */
  get position(): StreamPosition | null {
    return copy(this.last);
  }

  /**
   * True for an event not seen before, and the cursor moves to it; false for a
   * duplicate. An event without a position cannot be checked: it is new and
   * leaves the cursor where it is.
   */
  accept(event: { position: StreamPosition | null }): boolean {
    const p = event.position;
    if (p === null) return true;
    if (!isNew(p, this.last)) return false;
    this.last = copy(p);
    return true;
  }

  /**
   * Takes in a `subscribed` frame for this topic. Recovered: the cursor stays
   * (the events after it follow), or starts at `position` when it had none.
   * Not recovered: the cursor moves to `position`, where the stream continues,
   * and the gap is returned for the app to surface.
   */
  confirm(confirmation: Confirmation): Gap | null {
    const position = copy(confirmation.position);
    if (confirmation.recovered) {
      this.last ??= position;
      return null;
    }
    const since = this.last;
    this.last = position;
    const given = confirmation.reason;
    const reason = isGapReason(given) ? given : inferReason(since, position);
    return { topic: this.topic, since: copy(since), position: copy(position), reason };
  }

  /**
   * Moves the cursor forward to `p`, a position the stream is known to have
   * reached (a `position` frame: events the bridge's filters left out). Forward
   * only, within the cursor's epoch: an older position, one of another epoch, or
   * a cursor with no position yet stays where it is. True when it moved.
   */
  advance(p: StreamPosition): boolean {
    const last = this.last;
    if (last === null || p.epoch !== last.epoch || !(p.offset > last.offset)) return false;
    this.last = copy(p);
    return true;
  }

  /** Forgets the position (the topic was unsubscribed). */
  reset(): void {
    this.last = null;
  }
}

function copy(p: StreamPosition | null | undefined): StreamPosition | null {
  return p == null ? null : { offset: p.offset, epoch: p.epoch };
}
