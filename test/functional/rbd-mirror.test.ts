/**
 * RBD backends replicate through Ceph's own rbd-mirror (issue 16 part 4), on
 * two real clusters with an rbd-mirror daemon each (test/helpers/ceph-pair.ts).
 *
 * - The pair itself: pools peered with Ceph's bootstrap tokens and an image
 *   mirrored in snapshot mode through the `rbd` CLI reach the secondary, data
 *   and all (compared against the image itself, not `rbd mirror image
 *   status`, which lags about 30 s on a fresh daemon).
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { startCephPair } from '../helpers/ceph-pair.ts';

const pair = await startCephPair();
after(() => pair.stop());
const { primary: a, secondary: b } = pair;

/** The sha256 of an image's head, exported whole through `rbd export`. */
async function imageDigest(c: typeof a, pool: string, image: string): Promise<string> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-mirror-'));
  try {
    const file = path.join(dir, 'image');
    await c.rbd('export', '--no-progress', `${pool}/${image}`, file);
    return createHash('sha256').update(fs.readFileSync(file)).digest('hex');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Polls `probe` every 500 ms until it returns true; fails naming `what` after `timeoutMs`. */
async function until(what: string, timeoutMs: number, probe: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

test('an image mirrored in snapshot mode reaches the secondary cluster with its data', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-mirror-'));
  const pool = await pair.newPool();
  try {
    // Peering as an operator does it by hand: both pools in image mode, the primary's token imported on the secondary.
    await a.rbd('mirror', 'pool', 'enable', pool, 'image', '--site-name', 'cli-a');
    await b.rbd('mirror', 'pool', 'enable', pool, 'image', '--site-name', 'cli-b');
    const token = path.join(dir, 'token');
    fs.writeFileSync(token, await a.rbd('mirror', 'pool', 'peer', 'bootstrap', 'create', '--site-name', 'cli-a', pool));
    await b.rbd('mirror', 'pool', 'peer', 'bootstrap', 'import', '--site-name', 'cli-b', '--direction', 'rx-tx', pool, token);

    const image = `cli-${randomBytes(4).toString('hex')}`;
    await a.rbd('create', '--size', '32M', `${pool}/${image}`);
    await a.rbd('mirror', 'image', 'enable', `${pool}/${image}`, 'snapshot');
    // Writes at random 4 KiB offsets (rbd bench's own bytes), then a mirror snapshot to ship them.
    await a.rbd('bench', '--io-type', 'write', '--io-size', '4K', '--io-total', '2M', '--io-pattern', 'rand', `${pool}/${image}`);
    await a.rbd('mirror', 'image', 'snapshot', `${pool}/${image}`);
    const want = await imageDigest(a, pool, image);
    assert.notEqual(want, createHash('sha256').update(Buffer.alloc(32 * 1024 * 1024)).digest('hex'), 'the primary holds what was written');
    await until('the secondary image equal to the primary', 120_000, async () => (await imageDigest(b, pool, image)) === want);
    // Each side knows which is which: the secondary's copy is non-primary (it refuses writes until promoted).
    const mirroring = async (c: typeof a) => (JSON.parse(await c.rbd('info', '--format', 'json', `${pool}/${image}`)) as { mirroring?: { mode: string; primary: boolean } }).mirroring;
    assert.deepEqual(await mirroring(a), { ...(await mirroring(a)), mode: 'snapshot', primary: true });
    assert.deepEqual(await mirroring(b), { ...(await mirroring(b)), mode: 'snapshot', primary: false });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
