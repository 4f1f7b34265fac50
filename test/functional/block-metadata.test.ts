/**
 * Changed-block tracking as a public, experimental API (issue 17 part 4), in
 * the shape of CSI's SnapshotMetadata service: a snapshot's allocated extents
 * and the extents that differ from a base snapshot (for a later snapshot or
 * an available volume), paged — checked against the data written through the
 * NBD export: every byte written lies inside the answer, and ranges never
 * written are never in it.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { writeOverNbd } from '../helpers/nbd-write.ts';
import { PROJECT, startTestServer, waitFor, waitForStatus, type TestServer } from '../helpers/server.ts';

const V = `/v3/${PROJECT}`;
const EXPERIMENTAL = { 'OpenStack-API-Experimental': 'true' };
const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

interface Page { block_metadata_type: string; volume_capacity_bytes: number; block_metadata: Array<{ byte_offset: number; size_bytes: number }>; next_starting_offset: number | null }
type Range = [offset: number, length: number];

async function snapshot(s: TestServer, vol: string): Promise<string> {
  const r = await s.request('POST', `${V}/snapshots`, { snapshot: { volume_id: vol } });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  const id = r.body.snapshot.id as string;
  await waitFor(`snapshot ${id} available`, async () => (await s.request('GET', `${V}/snapshots/${id}`)).body.snapshot.status === 'available');
  return id;
}

/** Every page of `path` (which has no query or ends with one), following next_starting_offset. */
async function allPages(s: TestServer, path: string, maxResults?: number): Promise<{ pages: Page[]; extents: Range[] }> {
  const pages: Page[] = [];
  let start: number | null = 0;
  while (start !== null) {
    const sep = path.includes('?') ? '&' : '?';
    const r = await s.request('GET', `${V}${path}${sep}starting_offset=${start}${maxResults ? `&max_results=${maxResults}` : ''}`, undefined, EXPERIMENTAL);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.headers.get('openstack-api-experimental'), 'true');
    pages.push(r.body);
    start = r.body.next_starting_offset;
  }
  const extents = pages.flatMap((p) => p.block_metadata.map((e): Range => [e.byte_offset, e.size_bytes]));
  for (let i = 1; i < extents.length; i++) assert.ok(extents[i]![0] >= extents[i - 1]![0] + extents[i - 1]![1], 'sorted, not overlapping');
  return { pages, extents };
}

const covers = (extents: Range[], [off, len]: Range): boolean => {
  let pos = off;
  for (const [o, l] of extents) if (o <= pos && o + l > pos) pos = Math.min(off + len, o + l);
  return pos >= off + len;
};
const touches = (extents: Range[], [off, len]: Range): boolean => extents.some(([o, l]) => o < off + len && off < o + l);
const total = (extents: Range[]): number => extents.reduce((a, [, l]) => a + l, 0);

test('allocated and changed extents of snapshots and a volume, against the data written', async (t) => {
  const s = await startTestServer(t);
  const vol = (await s.request('POST', `${V}/volumes`, { volume: { size: 1 } })).body.volume.id as string;
  await waitForStatus(s, vol, 'available');
  const A: Range = [0, 64 * KiB];
  const B: Range = [8 * MiB, 64 * KiB];
  const C: Range = [16 * MiB, 64 * KiB];
  const D: Range = [0, 4 * KiB];
  const E: Range = [24 * MiB, 4 * KiB];
  const NEVER: Range[] = [[32 * MiB, 32 * MiB], [512 * MiB, 256 * MiB], [GiB - MiB, MiB]];
  const write = (pattern: number, [off, len]: Range) => writeOverNbd(s, vol, `write -P ${pattern} ${off} ${len}`);
  await write(0x11, A);
  await write(0x22, B);
  const snap1 = await snapshot(s, vol);
  await write(0x33, C);
  await write(0x44, D);
  const snap2 = await snapshot(s, vol);

  // GetMetadataAllocated: what snap1 holds, and nothing it does not.
  const allocated = await allPages(s, `/snapshots/${snap1}/allocated-extents`);
  assert.equal(allocated.pages[0]!.block_metadata_type, 'VARIABLE_LENGTH');
  assert.equal(allocated.pages[0]!.volume_capacity_bytes, GiB);
  assert.ok(covers(allocated.extents, A) && covers(allocated.extents, B), JSON.stringify(allocated.extents));
  for (const r of [C, ...NEVER]) assert.ok(!touches(allocated.extents, r), `${r} was not written before snap1: ${JSON.stringify(allocated.extents)}`);
  assert.ok(total(allocated.extents) < 4 * MiB, 'no more than the data and the filesystem\'s rounding');

  // GetMetadataDelta between snapshots: what was written between them lies inside; never-written ranges do not.
  const delta = await allPages(s, `/snapshots/${snap2}/changed-extents?base_snapshot_id=${snap1}`);
  assert.ok(covers(delta.extents, C) && covers(delta.extents, D), JSON.stringify(delta.extents));
  for (const r of NEVER) assert.ok(!touches(delta.extents, r), `${r} was never written: ${JSON.stringify(delta.extents)}`);
  assert.ok(total(delta.extents) < 4 * MiB);

  // The available volume against snap2: the write since.
  await write(0x55, E);
  const now = await allPages(s, `/volumes/${vol}/changed-extents?base_snapshot_id=${snap2}`);
  assert.ok(covers(now.extents, E), JSON.stringify(now.extents));
  for (const r of NEVER) assert.ok(!touches(now.extents, r));

  // Paging: one extent a page gives the same answer; a starting offset inside an extent cuts it there.
  const paged = await allPages(s, `/snapshots/${snap1}/allocated-extents`, 1);
  assert.deepEqual(paged.extents, allocated.extents);
  assert.equal(paged.pages.length, allocated.extents.length);
  const cut = await s.request('GET', `${V}/snapshots/${snap1}/allocated-extents?starting_offset=${B[0] + 4 * KiB}`, undefined, EXPERIMENTAL);
  assert.equal(cut.body.block_metadata[0].byte_offset, B[0] + 4 * KiB);
  assert.ok(cut.body.block_metadata.every((e: { byte_offset: number }) => e.byte_offset >= B[0] + 4 * KiB));

  // An extended volume: everything past the base's size is new.
  assert.equal((await s.request('POST', `${V}/volumes/${vol}/action`, { 'os-extend': { new_size: 2 } })).status, 202);
  await waitFor('extended', async () => (await s.request('GET', `${V}/volumes/${vol}`)).body.volume.size === 2);
  const grown = await allPages(s, `/volumes/${vol}/changed-extents?base_snapshot_id=${snap2}`);
  assert.ok(covers(grown.extents, [GiB, GiB]) && covers(grown.extents, E), JSON.stringify(grown.extents));
  assert.equal(grown.pages[0]!.volume_capacity_bytes, 2 * GiB);
});

test('block metadata refuses what it cannot answer, naming the field; without the header it does not exist', async (t) => {
  const s = await startTestServer(t);
  const make = async (): Promise<string> => {
    const id = (await s.request('POST', `${V}/volumes`, { volume: { size: 1 } })).body.volume.id as string;
    await waitForStatus(s, id, 'available');
    return id;
  };
  const [vol, other] = [await make(), await make()];
  const older = await snapshot(s, vol);
  const newer = await snapshot(s, vol);
  const foreign = await snapshot(s, other);
  const get = (path: string, headers: Record<string, string> = EXPERIMENTAL) => s.request('GET', `${V}${path}`, undefined, headers);

  assert.equal((await get(`/snapshots/${older}/allocated-extents`, {})).status, 404, 'experimental: absent without the header');
  const cases: Array<[string, RegExp]> = [
    [`/snapshots/${newer}/changed-extents`, /base_snapshot_id is required/],
    [`/snapshots/${newer}/changed-extents?base_snapshot_id=${foreign}`, /base_snapshot_id .* another volume/],
    [`/snapshots/${older}/changed-extents?base_snapshot_id=${newer}`, /base_snapshot_id .* not older/],
    [`/snapshots/${older}/changed-extents?base_snapshot_id=${older}`, /base_snapshot_id must name an earlier snapshot/],
    [`/volumes/${other}/changed-extents?base_snapshot_id=${older}`, /base_snapshot_id .* is not a snapshot of volume/],
    [`/snapshots/${older}/allocated-extents?max_results=0`, /max_results must be an integer of at least 1/],
    [`/snapshots/${older}/allocated-extents?starting_offset=-5`, /starting_offset must be an integer/],
  ];
  for (const [path, message] of cases) {
    const r = await get(path);
    assert.equal(r.status, 400, `${path}: ${JSON.stringify(r.body)}`);
    assert.match(r.body.badRequest.message, message);
  }
  assert.equal((await get('/snapshots/00000000-0000-0000-0000-000000000000/allocated-extents')).status, 404);
  assert.equal((await get(`/snapshots/${older}/allocated-extents`, { ...EXPERIMENTAL, 'X-Auth-Token': 'someone:elsewhere', 'X-Project-Id': 'elsewhere' })).status, 400, 'another project names itself in the URL');

  // An attached volume is written while compared: refused, saying to snapshot it.
  const connector = { host: 'compute-1', ip: '127.0.0.1', initiator: 'iqn.test', mode: 'rw' };
  const a = await s.request('POST', `${V}/attachments`, { attachment: { volume_uuid: vol, connector } }, { 'OpenStack-API-Version': 'volume 3.54' });
  await s.request('POST', `${V}/attachments/${a.body.attachment.id}/action`, { 'os-complete': null }, { 'OpenStack-API-Version': 'volume 3.54' });
  await waitForStatus(s, vol, 'in-use');
  const busy = await get(`/volumes/${vol}/changed-extents?base_snapshot_id=${older}`);
  assert.equal(busy.status, 400);
  assert.match(busy.body.badRequest.message, /must be available.*take a snapshot/);
});
