/**
 * QoS at the export (issue 18, part 4): the specs' keys as Cinder names them
 * become per-lane limits (per-GB variants, minimums, bursts, IOPS size), and
 * the limiter holds a volume's requests to them on both data planes, across
 * its connections together. Only lower bounds on time are checked: requests
 * may never go faster than the limit; a slow machine only makes them slower.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { nbd, QosLimiter, qosLimits } from '../../src/export/index.ts';
import { PLANES, startNbd } from '../helpers/nbd-export.ts';
import { simpleRequest } from '../helpers/nbd-raw.ts';

test('specs become limits: rates, per-GB with a floor, bursts, the IOPS size; bad values are named', () => {
  assert.equal(qosLimits({ key1: 'value1' }, 10), undefined, 'no limit key, no limits');
  assert.deepEqual(qosLimits({ total_iops_sec: '500', read_bytes_sec: '1048576', total_iops_sec_max: '1000', size_iops_sec: '8192' }, 10), {
    rates: { total_iops: 500, read_bytes: 1048576 },
    bursts: { total_iops: 1000, read_bytes: 104857.6 },
    sizeIops: 8192,
  });
  assert.deepEqual(qosLimits({ write_iops_sec_per_gb: '10', write_iops_sec_per_gb_min: '50' }, 2)!.rates, { write_iops: 50 }, 'the floor');
  assert.deepEqual(qosLimits({ write_iops_sec_per_gb: '10', write_iops_sec_per_gb_min: '50' }, 20)!.rates, { write_iops: 200 });
  assert.deepEqual(qosLimits({ total_bytes_sec: '1000', total_bytes_sec_max: '3000', total_bytes_sec_max_length: '2' }, 1)!.bursts, { total_bytes: 6000 });
  assert.equal(qosLimits({ total_iops_sec: '0' }, 1), undefined, '0 is no limit');
  assert.throws(() => qosLimits({ read_iops_sec: 'fast' }, 1), /QoS spec read_iops_sec must be a number of at least 0, not "fast"/);
});

test('the limiter: a burst goes at once, the rest at the rate; reads and writes count on their own lanes', () => {
  const l = new QosLimiter(qosLimits({ total_iops_sec: '1000', total_iops_sec_max: '1000', total_iops_sec_max_length: '0.1', write_bytes_sec: '1000000' }, 1)!);
  const waits = Array.from({ length: 300 }, () => l.admit(false, 4096));
  assert.ok(waits.slice(0, 99).every((w) => w <= 1), `the first 100 at once: ${waits.slice(0, 5)}`);
  assert.ok(waits[299]! >= 195, `the 300th after (300 - 100) / 1000 s: ${waits[299]} ms`);
  // A write of 500 kB on the write-bytes lane (and the IOPS lane, now 200 ms ahead) waits for both.
  const w = l.admit(true, 500_000);
  assert.ok(w >= 195, `${w}`);
  assert.ok(l.admit(true, 500_000) >= 495, 'the second half-megabyte a half-second later');
});

for (const plane of PLANES.filter((p) => p !== 'tls')) {
  test(`${plane}: a volume's IOPS limit holds across its connections; no limit, no wait`, { timeout: 60_000 }, async (t) => {
    const f = await startNbd(t, { plane, volumes: [{ name: 'v', sizeGiB: 1 }, { name: 'free', sizeGiB: 1 }] });
    // Limits are the export's: the provider gives them, the server shares one limiter per volume.
    const limited = qosLimits({ total_iops_sec: '200', total_iops_sec_max: '200', total_iops_sec_max_length: '0.1' }, 1)!;
    f.setQos('v', limited);
    const reads = async (name: string, n: number): Promise<void> => {
      const c = await f.connect(name);
      for (let i = 0; i < n; i++) assert.equal((await simpleRequest(c, nbd.CMD.READ, BigInt(i * 4096), 4096)).error, 0);
      c.sock.destroy();
    };
    const started = performance.now();
    await Promise.all([reads('v', 150), reads('v', 150)]);
    const seconds = (performance.now() - started) / 1000;
    // 300 reads at 200/s, 20 of them a burst: at least 1.4 s, whoever sent them.
    assert.ok(seconds >= 1.35, `300 reads in ${seconds.toFixed(2)} s: faster than 200 IOPS`);
    const free = performance.now();
    await reads('free', 300);
    assert.ok((performance.now() - free) / 1000 < seconds, 'a volume without limits is not held to them');
  });
}
