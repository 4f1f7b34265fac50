/**
 * Builds the dashboard into dashboard/dist, served by the API at /dashboard/
 * (src/api/dashboard.ts). JSX is compiled by Vite's own esbuild (no React
 * plugin: the one that fits Vite 7 adds nothing a build without fast refresh
 * needs), and assets get absolute /dashboard/ paths so any URL below it loads.
 */
import { defineConfig } from 'vite';

export default defineConfig({
  base: '/dashboard/',
  esbuild: { jsx: 'automatic' },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    // The page is served with a CSP without 'unsafe-inline': no inlined module preload polyfill.
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0,
    chunkSizeWarningLimit: 1024,
  },
  logLevel: 'warn',
});
