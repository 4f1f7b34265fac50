/**
 * What the client commands print: tables for people (cli-table3), plain
 * JSON with `--json` for scripts — the API's own objects, unchanged.
 */
import Table from 'cli-table3';

/** One column of a list: its header and how a row shows in it. */
export type Column = [header: string, value: (row: Record<string, any>) => unknown]; // eslint-disable-line @typescript-eslint/no-explicit-any

/** A value as a table cell: nothing for null, lists joined, objects as compact JSON. */
function cell(v: unknown): string {
  if (v === null || v === undefined) return '';
  if (Array.isArray(v) && v.every((x) => typeof x !== 'object')) return v.join(', ');
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

/** A table without colours when stdout is not a terminal (a file, a pipe, a test). */
function table(head?: string[]): Table.Table {
  const plain = !process.stdout.isTTY;
  return new Table({ ...(head ? { head } : {}), style: plain ? { head: [], border: [] } : {} });
}

/** Prints a list of resources: a table of `columns`, or the objects as JSON. */
export function printList(rows: Array<Record<string, unknown>>, columns: Column[], json: boolean): void {
  if (json) return void console.log(JSON.stringify(rows, null, 2));
  const t = table(columns.map(([h]) => h));
  for (const row of rows) t.push(columns.map(([, f]) => cell(f(row))));
  console.log(t.toString());
}

/** Prints one resource: a Field/Value table sorted by field, or the object as JSON. */
export function printObject(obj: Record<string, unknown>, json: boolean): void {
  if (json) return void console.log(JSON.stringify(obj, null, 2));
  const t = table(['Field', 'Value']);
  for (const key of Object.keys(obj).sort()) t.push([key, cell(obj[key])]);
  console.log(t.toString());
}
