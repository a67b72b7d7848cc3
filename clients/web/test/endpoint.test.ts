import { describe, expect, it } from 'vitest';
import { endpointFromPage, resolveEndpoint, withSince } from '../src/endpoint';

const http = { protocol: 'http:', host: 'localhost:8000' };
const https = { protocol: 'https:', host: 'ops.example.test' };

describe('endpoints', () => {
  it('puts a path on the page host with the matching scheme', () => {
    expect(resolveEndpoint('/ws/dashboard', http)).toBe('ws://localhost:8000/ws/dashboard');
    expect(resolveEndpoint('ws/map', https)).toBe('wss://ops.example.test/ws/map');
  });

  it('keeps ws URLs and converts http ones', () => {
    expect(resolveEndpoint('ws://other:9000/ws/agents', https)).toBe('ws://other:9000/ws/agents');
    expect(resolveEndpoint('https://other/ws/agents', http)).toBe('wss://other/ws/agents');
  });

  it('defaults to /ws/connect and honours ?endpoint=', () => {
    expect(endpointFromPage({ ...http, search: '' })).toBe('ws://localhost:8000/ws/connect');
    expect(endpointFromPage({ ...http, search: '?endpoint=/ws/dashboard' })).toBe('ws://localhost:8000/ws/dashboard');
    expect(endpointFromPage({ ...https, search: '?endpoint=' })).toBe('wss://ops.example.test/ws/connect');
  });

  it('adds one since=TOPIC:EPOCH:OFFSET per position, after any query already there', () => {
    const p = { offset: 41, epoch: 'a41f0c2b9e77' };
    expect(withSince('ws://h/ws/connect', [])).toBe('ws://h/ws/connect');
    expect(withSince('ws://h/ws/connect', [['anomalies', p]])).toBe('ws://h/ws/connect?since=anomalies:a41f0c2b9e77:41');
    const url = withSince('ws://h/ws/map?batch=1', [
      ['map_updates', { offset: 0, epoch: 'e1' }],
      ['package_updates', { offset: 7, epoch: 'odd&epoch' }],
    ]);
    expect(url).toBe('ws://h/ws/map?batch=1&since=map_updates:e1:0&since=package_updates:odd%26epoch:7');
    expect(new URL(url).searchParams.getAll('since')).toEqual(['map_updates:e1:0', 'package_updates:odd&epoch:7']);
  });
});
