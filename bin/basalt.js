#!/usr/bin/env node
// Entry point of the `basalt` command: runs src/cli/main.ts from the bundle
// scripts/bundle.mjs keeps in step with the sources; from the sources through
// tsx when no bundle can be made (a checkout it cannot write to).
import { bundledMain } from '../scripts/bundle.mjs';

let main;
try {
  main = await bundledMain();
} catch (err) {
  process.stderr.write(`basalt: running the sources through tsx, no bundle could be made: ${err.message}\n`);
  const { register } = await import('tsx/esm/api');
  register();
  main = new URL('../src/cli/main.ts', import.meta.url).href;
}
await import(main);
