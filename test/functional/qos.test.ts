/**
 * QoS that takes effect (issue 18, part 4), through the API: a volume type's
 * QoS specs limit its volumes' I/O at the export; a front-end (or both)
 * consumer's specs are in the connection info as Cinder gives them, a
 * back-end one's are not but still apply; a value the export could not apply
 * is refused when the spec is written; pools say QoS_support.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { nbd } from '../../src/export/index.ts';
import { openExport, simpleRequest } from '../helpers/nbd-raw.ts';
import { PROJECT, startTestServer, waitForStatus } from '../helpers/server.ts';

const V = `/v3/${PROJECT}`;
const MV = { 'OpenStack-API-Version': 'volume 3.54' };

test('a type\'s QoS specs limit its volumes at the export and front-end ones reach the host', { timeout: 120_000 }, async (t) => {
  const s = await startTestServer(t);
  const bad = await s.request('POST', `${V}/qos-specs`, { qos_specs: { name: 'bad', total_iops_sec: 'lots' } });
  assert.equal(bad.status, 400);
  assert.match(bad.body.badRequest.message, /total_iops_sec must be a number/);

  const attachWith = async (consumer: string): Promise<{ info: Record<string, any>; id: string }> => { // eslint-disable-line @typescript-eslint/no-explicit-any
    const q = await s.request('POST', `${V}/qos-specs`, { qos_specs: { name: `limit-${consumer}`, consumer, total_iops_sec: '100', total_iops_sec_max: '100', total_iops_sec_max_length: '0.1' } });
    assert.equal(q.status, 200, JSON.stringify(q.body));
    const type = await s.request('POST', `${V}/types`, { volume_type: { name: `limited-${consumer}` } });
    assert.equal((await s.request('GET', `${V}/qos-specs/${q.body.qos_specs.id}/associate?vol_type_id=${type.body.volume_type.id}`)).status, 202);
    const v = await s.request('POST', `${V}/volumes`, { volume: { size: 1, volume_type: `limited-${consumer}` } });
    await waitForStatus(s, v.body.volume.id, 'available');
    const a = await s.request('POST', `${V}/attachments`, { attachment: { volume_uuid: v.body.volume.id, connector: { host: 'compute-1' } } }, MV);
    assert.equal(a.status, 200, JSON.stringify(a.body));
    return { info: a.body.attachment.connection_info.data, id: v.body.volume.id };
  };

  const front = await attachWith('front-end');
  assert.deepEqual(front.info.qos_specs, { total_iops_sec: '100', total_iops_sec_max: '100', total_iops_sec_max_length: '0.1' });
  const back = await attachWith('back-end');
  assert.equal(back.info.qos_specs, null, 'back-end specs are the storage side\'s: not the host\'s to apply');

  // Both apply at the export: 150 reads at 100 IOPS (10 of them a burst) take at least 1.4 s.
  for (const { info } of [front, back]) {
    const c = await openExport(info.host, info.port, info.export_name);
    const started = performance.now();
    for (let i = 0; i < 150; i++) assert.equal((await simpleRequest(c, nbd.CMD.READ, BigInt(i * 4096), 4096)).error, 0);
    const seconds = (performance.now() - started) / 1000;
    c.sock.destroy();
    assert.ok(seconds >= 1.35, `150 reads in ${seconds.toFixed(2)} s`);
  }

  const pools = await s.request('GET', `${V}/scheduler-stats/get_pools?detail=true`);
  assert.ok(pools.body.pools.length > 0 && pools.body.pools.every((p: { capabilities: { QoS_support: boolean } }) => p.capabilities.QoS_support === true));
});
