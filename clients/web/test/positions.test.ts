import { describe, expect, it } from 'vitest';
import type { StreamPosition } from '../src/frames';
import { Cursor, inferReason, isGapReason, isNew } from '../src/positions';

const at = (offset: number, epoch = 'e1'): StreamPosition => ({ offset, epoch });
const ev = (offset: number, epoch = 'e1') => ({ position: at(offset, epoch) });

/** A small seeded generator (mulberry32), so a failing case can be run again. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const pick = (random: () => number, n: number) => Math.floor(random() * n);

describe('isNew', () => {
  it('is true with nothing seen, in another epoch, or at a larger offset', () => {
    expect(isNew(at(0), undefined)).toBe(true);
    expect(isNew(at(0), null)).toBe(true);
    expect(isNew(at(4), at(3))).toBe(true);
    expect(isNew(at(1, 'e2'), at(9, 'e1'))).toBe(true);
    expect(isNew(at(3), at(3))).toBe(false);
    expect(isNew(at(2), at(3))).toBe(false);
  });

  it('within an epoch, orders positions strictly (property)', () => {
    const random = rng(1);
    for (let i = 0; i < 1_000; i++) {
      const a = at(pick(random, 50));
      const b = at(pick(random, 50));
      if (a.offset === b.offset) expect([isNew(a, b), isNew(b, a)]).toEqual([false, false]);
      else expect(isNew(a, b)).not.toBe(isNew(b, a));
    }
  });
});

describe('Cursor.accept', () => {
  it('takes each new event once and moves to it', () => {
    const c = new Cursor('anomalies');
    expect(c.position).toBeNull();
    expect([1, 2, 2, 1, 3].map((o) => c.accept(ev(o)))).toEqual([true, true, false, false, true]);
    expect(c.position).toEqual(at(3));
    expect(c.accept(ev(1, 'e2'))).toBe(true);
    expect(c.position).toEqual(at(1, 'e2'));
  });

  it('lets an event without a position through and stays where it was', () => {
    const c = new Cursor('anomalies', at(5));
    expect(c.accept({ position: null })).toBe(true);
    expect(c.position).toEqual(at(5));
  });

  it('keeps its own copies', () => {
    const start = at(5);
    const c = new Cursor('anomalies', start);
    start.offset = 100;
    const seen = c.position!;
    seen.offset = 200;
    expect(c.position).toEqual(at(5));
    const e = ev(6);
    c.accept(e);
    e.position.offset = 300;
    expect(c.position).toEqual(at(6));
  });

  it('turns an at-least-once, in-order delivery into the stream exactly once (property)', () => {
    const random = rng(2);
    for (let run = 0; run < 200; run++) {
      // The stream: a few epochs, offsets 1..k in each.
      const stream: StreamPosition[] = [];
      const epochs = 1 + pick(random, 3);
      for (let e = 0; e < epochs; e++) {
        const k = pick(random, 20);
        for (let o = 1; o <= k; o++) stream.push(at(o, `e${run}-${e}`));
      }
      // Delivered with duplicates of events of the current epoch already delivered (what a resume may resend).
      const delivered: StreamPosition[] = [];
      for (const p of stream) {
        while (random() < 0.3) {
          const earlier = delivered.filter((d) => d.epoch === p.epoch);
          if (earlier.length === 0) break;
          delivered.push(earlier[pick(random, earlier.length)]!);
        }
        delivered.push(p);
      }
      const c = new Cursor('package_updates');
      const accepted = delivered.filter((p) => c.accept({ position: p }));
      expect(accepted).toEqual(stream);
      expect(c.position).toEqual(stream.at(-1) ?? null);
    }
  });
});

describe('Cursor.confirm', () => {
  it('recovered: keeps the position it has, else starts at the confirmed one', () => {
    const c = new Cursor('anomalies', at(3));
    expect(c.confirm({ recovered: true, position: at(9) })).toBeNull();
    expect(c.position).toEqual(at(3));
    const fresh = new Cursor('anomalies');
    expect(fresh.confirm({ recovered: true, position: at(9) })).toBeNull();
    expect(fresh.position).toEqual(at(9));
    expect(fresh.accept(ev(9))).toBe(false);
    expect(fresh.accept(ev(10))).toBe(true);
    const unknown = new Cursor('anomalies');
    expect(unknown.confirm({ recovered: true, position: null })).toBeNull();
    expect(unknown.position).toBeNull();
  });

  it('not recovered: moves to where the stream continues and returns the gap', () => {
    const c = new Cursor('package_updates', at(3));
    const gap = c.confirm({ recovered: false, position: at(0, 'NEW'), reason: 'epoch_changed' });
    expect(gap).toEqual({ topic: 'package_updates', since: at(3), position: at(0, 'NEW'), reason: 'epoch_changed' });
    expect(c.position).toEqual(at(0, 'NEW'));
    expect(c.accept(ev(1, 'NEW'))).toBe(true);

    const trimmed = new Cursor('package_updates', at(3));
    expect(trimmed.confirm({ recovered: false, position: at(10), reason: 'history_trimmed' })?.reason).toBe('history_trimmed');
    expect(trimmed.accept(ev(10))).toBe(false);
    expect(trimmed.accept(ev(11))).toBe(true);
  });

  it('after a gap, every event that follows the notice is taken exactly once (property)', () => {
    const random = rng(3);
    for (let run = 0; run < 300; run++) {
      const c = new Cursor('map_updates', at(pick(random, 30), 'old'));
      const sameEpoch = random() < 0.5;
      const position = at(pick(random, 30), sameEpoch ? 'old' : 'new');
      c.confirm({ recovered: false, position });
      const after = Array.from({ length: pick(random, 10) }, (_, i) => at(position.offset + 1 + i, position.epoch));
      expect(after.every((p) => c.accept({ position: p }))).toBe(true);
      expect(after.some((p) => c.accept({ position: p }))).toBe(false);
    }
  });

  it('infers the reason a notice did not give, or gave one this client does not know', () => {
    const gap = (since: StreamPosition | null, position: StreamPosition | null, reason?: string) =>
      new Cursor('anomalies', since).confirm({ recovered: false, position, reason })?.reason;
    expect(gap(at(3), at(0, 'e2'))).toBe('epoch_changed');
    expect(gap(at(9), at(4))).toBe('position_ahead');
    expect(gap(at(3), at(10))).toBe('history_trimmed');
    expect(gap(at(3), at(10), 'from_the_future')).toBe('history_trimmed');
    expect(gap(at(3), at(10), 'position_ahead')).toBe('position_ahead');
    expect(inferReason(null, at(1))).toBe('epoch_changed');
    expect(isGapReason('history_trimmed')).toBe(true);
    expect(isGapReason('nope')).toBe(false);
  });

  it('not recovered without a position: forgets its own, so nothing that follows is dropped', () => {
    const c = new Cursor('anomalies', at(7));
    expect(c.confirm({ recovered: false, position: null })).toEqual({
      topic: 'anomalies',
      since: at(7),
      position: null,
      reason: 'epoch_changed',
    });
    expect(c.accept(ev(1))).toBe(true);
  });

  it('reset forgets the position', () => {
    const c = new Cursor('anomalies', at(7));
    c.reset();
    expect(c.position).toBeNull();
    expect(c.accept(ev(1))).toBe(true);
  });
});
