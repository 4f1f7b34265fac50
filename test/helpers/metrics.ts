/** Reading `/metrics` in tests: Prometheus' text format parsed line by line, each line's shape checked. */
import assert from 'node:assert/strict';
import type { TestServer } from './server.ts';

/** A sample of the text format: name, labels, value. */
export interface Sample { name: string; labels: Record<string, string>; value: number }

/** Parses Prometheus' text exposition format (0.0.4): every sample line, checking each line's shape. */
export function parseMetrics(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('# HELP ') || line.startsWith('# TYPE ')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (-?[0-9.e+-]+|[Nn]a[Nn]|\+Inf|-Inf)$/.exec(line); // Go's ParseFloat: NaN in any case
    assert.ok(m, `not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of m[2] ? m[2].matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g) : []) labels[l[1]!] = l[2]!;
    samples.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return samples;
}

/** The samples named `name` whose labels include `labels`. */
export const find = (samples: Sample[], name: string, labels: Record<string, string> = {}): Sample[] =>
  samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));

/** Scrapes a server's `/metrics`: its samples, and the value of the one sample a name and labels pick (undefined when none). */
export async function scrape(s: TestServer): Promise<{ samples: Sample[]; value(name: string, labels?: Record<string, string>): number | undefined }> {
  const res = await fetch(`${s.url}/metrics`);
  assert.equal(res.status, 200);
  const samples = parseMetrics(await res.text());
  return {
    samples,
    value(name, labels = {}) {
      const found = find(samples, name, labels);
      assert.ok(found.length <= 1, `${found.length} samples of ${name} ${JSON.stringify(labels)}`);
      return found[0]?.value;
    },
  };
}
