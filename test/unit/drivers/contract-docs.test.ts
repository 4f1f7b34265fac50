/**
 * The driver contract's documentation cannot drift from its shape: every
 * method of `VolumeDriver` and `VolumeHandle` is documented under the same
 * headings (nbdkit's plugin manual style), and every capability flag names
 * its default, which is the one in `CAPABILITY_DEFAULTS`.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import ts from 'typescript';
import { CAPABILITY_DEFAULTS } from '../../../src/drivers/index.ts';

const FILE = path.resolve(import.meta.dirname, '../../../src/drivers/volume-driver.ts');
const HEADINGS = ['When', 'Preconditions', 'Postconditions', 'Idempotency', 'Errors', 'Default'];

/** Members of an interface in the contract file, with their doc comments. */
function members(name: string): Array<{ name: string; optional: boolean; method: boolean; doc: string }> {
  const source = ts.createSourceFile(FILE, fs.readFileSync(FILE, 'utf8'), ts.ScriptTarget.Latest, true);
  const out: Array<{ name: string; optional: boolean; method: boolean; doc: string }> = [];
  source.forEachChild((node) => {
    if (!ts.isInterfaceDeclaration(node) || node.name.text !== name) return;
    for (const m of node.members) {
      const doc = ts.getJSDocCommentsAndTags(m).map((d) => d.getText()).join('\n');
      out.push({ name: m.name!.getText(), optional: !!m.questionToken, method: ts.isMethodSignature(m), doc });
    }
  });
  return out;
}

for (const iface of ['VolumeDriver', 'VolumeHandle']) {
  test(`every method of ${iface} is documented under the contract's headings`, () => {
    const methods = members(iface).filter((m) => m.method);
    assert.ok(methods.length >= 7);
    for (const m of methods) {
      for (const h of HEADINGS) assert.match(m.doc, new RegExp(`- ${h}\\b`), `${iface}.${m.name} says "${h}"`);
      if (m.optional) assert.match(m.doc, /- Default if omitted: \S/, `${iface}.${m.name} says what happens without it`);
      else assert.match(m.doc, /- Default: required/, `${iface}.${m.name} says it is required`);
    }
  });
}

test('every capability flag documents the default CAPABILITY_DEFAULTS applies', () => {
  const flags = members('DeclaredCapabilities');
  for (const [flag, value] of Object.entries(CAPABILITY_DEFAULTS)) {
    const m = flags.find((f) => f.name === flag);
    assert.ok(m, `${flag} is declared`);
    assert.ok(m.optional, `${flag} is optional`);
    assert.match(m.doc, new RegExp(`Default \`?${String(value)}\\b`), `${flag} documents its default ${String(value)}`);
  }
  for (const f of flags) {
    if (f.name.startsWith('can') || f.name.startsWith('supports')) assert.ok(f.name in CAPABILITY_DEFAULTS, `${f.name} has a default`);
  }
});
