import { describe, expect, it } from 'vitest';
import { endpointFromPage, resolveEndpoint } from '../src/endpoint';

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
});
