/**
 * A volume attached on this host through the CLI (`basalt attach`): a loop
 * device over the volume's file, detached (`losetup -d`) after the test.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { promisify } from 'node:util';
import { PROJECT, waitForStatus, type TestServer } from './server.ts';

const run = promisify(execFile);
const BIN = path.resolve(import.meta.dirname, '../../bin/basalt.js');

/** What {@link loopAttached} made. */
export interface LoopAttached {
  /** The volume (1 GiB, available before the attach). */
  vol: string;
  /** The loop device, e.g. `/dev/loop3`. */
  device: string;
  /** Runs `basalt ARGS --url … --project …` against the test server. */
  cli: (...args: string[]) => Promise<{ stdout: string; stderr: string }>;
}

/** Creates a 1 GiB volume on `s` and attaches it here with `basalt attach`. */
export async function loopAttached(t: TestContext, s: TestServer): Promise<LoopAttached> {
  const vol = (await s.request('POST', `/v3/${PROJECT}/volumes`, { volume: { size: 1 } })).body.volume.id as string;
  await waitForStatus(s, vol, 'available');
  const cli = (...args: string[]) => run(process.execPath, [BIN, ...args, '--url', s.url, '--project', PROJECT]);
  const device = (await cli('attach', vol)).stdout.trim();
  assert.match(device, /^\/dev\/loop\d+$/);
  t.after(() => run('losetup', ['-d', device]).catch(() => undefined));
  return { vol, device, cli };
}
