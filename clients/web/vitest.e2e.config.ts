import { defineConfig } from 'vitest/config';

// End-to-end: the built dashboard in Debian's Chromium against a bridge on 127.0.0.1.
export default defineConfig({
  test: {
    include: ['e2e/**/*.e2e.test.ts'],
    environment: 'node',
    testTimeout: 90_000,
    hookTimeout: 60_000,
    fileParallelism: false,
  },
});
