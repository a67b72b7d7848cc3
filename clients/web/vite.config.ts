/// <reference types="vitest/config" />
import { defineConfig } from 'vite';

// The dashboard is served by the bridge at `/`: relative asset paths, everything bundled.
export default defineConfig({
  base: './',
  // No React plugin needed: Oxc compiles TSX with the automatic runtime.
  oxc: { jsx: { runtime: 'automatic' } },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    assetsInlineLimit: 0,
    sourcemap: true,
    target: 'es2022',
  },
  test: {
    include: ['test/**/*.test.ts', 'test/**/*.test.tsx'],
    environment: 'node',
    testTimeout: 10_000,
    hookTimeout: 10_000,
    restoreMocks: true,
  },
});
