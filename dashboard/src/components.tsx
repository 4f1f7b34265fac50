/** Small pieces the pages share: tables, status badges, the error reason of a resource. */
import type { ReactNode } from 'react';
import { get, type UserMessage } from './api.ts';
import { usePoll } from './poll.ts';

/** One column of a {@link Table}. */
export interface Column<T> {
  title: string;
  /** The cell's content; also its `data-col` name (the title, lower-cased). */
  cell: (row: T) => ReactNode;
}

/**
 * A table of rows, each `data-id`'d by `rowId` and each cell `data-col`'d by
 * its column, so tests (and people with tools) can find a value without
 * counting columns.
 */
export function Table<T>({ rows, columns, rowId, empty, testId }: { rows: readonly T[]; columns: Column<T>[]; rowId: (row: T) => string; empty: string; testId: string }) {
  if (rows.length === 0) return <p className="empty" data-testid={`${testId}-empty`}>{empty}</p>;
  return (
    <table data-testid={testId}>
      <thead>
        <tr>{columns.map((c) => <th key={c.title}>{c.title}</th>)}</tr>
      </thead>
      <tbody>
        {rows.map((r) => (
          <tr key={rowId(r)} data-id={rowId(r)}>
            {columns.map((c) => <td key={c.title} data-col={colName(c.title)}>{c.cell(r)}</td>)}
          </tr>
        ))}
      </tbody>
    </table>
  );
}

/** The `data-col` name of a column title: lower case, words joined by `_`. */
export function colName(title: string): string {
  return title.toLowerCase().replace(/[^a-z0-9]+/g, '_').replace(/^_|_$/g, '');
}

/** How a status looks: green when settled, amber while changing, red in error. */
export function Status({ value }: { value: string }) {
  const kind = /error|down|fail/i.test(value) ? 'bad' : /ing$|reserved|attaching|detaching/.test(value) ? 'busy' : 'good';
  return <span className={`status ${kind}`}>{value}</span>;
}

/** Whether a status is an error status (what makes {@link Reason} look for a user message). */
export function isError(status: string): boolean {
  return status.startsWith('error');
}

/**
 * Why a resource is in error: the newest user message the API keeps for it
 * (`GET /messages?resource_uuid=…`, Cinder's account of failed asynchronous
 * work), else `fallback` (a backup's `fail_reason`), else a dash.
 */
export function Reason({ token, id, status, fallback }: { token: string; id: string; status: string; fallback?: string | null }) {
  const error = isError(status);
  const polled = usePoll(
    async (signal) => error ? (await get<{ messages: UserMessage[] }>(token, `/messages?resource_uuid=${encodeURIComponent(id)}&limit=1&all_tenants=1`, { signal })).messages[0] : undefined,
    15_000, `${id}:${status}`,
  );
  if (!error) return <span className="muted">—</span>;
  const text = polled.data?.user_message ?? fallback ?? (polled.error ? `(${polled.error})` : polled.at ? 'no message recorded' : '…');
  return <span className="reason">{text}</span>;
}

/** A page's heading, with when its data was last loaded and the latest load error. */
export function PageHeader({ title, at, error, children }: { title: string; at?: Date | undefined; error?: string | undefined; children?: ReactNode }) {
  return (
    <header className="page-header">
      <h1>{title}</h1>
      {children}
      <span className="muted" data-testid="loaded-at">{at ? `updated ${at.toLocaleTimeString()}` : 'loading…'}</span>
      {error ? <p className="error" role="alert" data-testid="page-error">{error}</p> : null}
    </header>
  );
}

/** Shortens an id to its first block, the full id in the tooltip. */
export function ShortId({ id }: { id: string | null | undefined }) {
  if (!id) return <span className="muted">—</span>;
  return <code title={id}>{id.slice(0, 8)}</code>;
}

/** A Cinder time (`2026-11-25T13:37:03.123000`, UTC) as local time; a dash when absent. */
export function Time({ value }: { value: string | null | undefined }) {
  if (!value) return <span className="muted">—</span>;
  const d = new Date(/Z|[+-]\d\d:\d\d$/.test(value) ? value : `${value}Z`);
  return <time dateTime={d.toISOString()} title={value}>{d.toLocaleString()}</time>;
}

/**
 * A page that lists one kind of resource: `GET /v3{path}` polled every five
 * seconds, its `listKey` array shown as a table.
 */
export function ListPage<T>({ token, title, path, listKey, rowId, empty, columns }: {
  token: string; title: string; path: string; listKey: string; rowId: (row: T) => string; empty: string; columns: Column<T>[];
}) {
  const polled = usePoll(async (signal) => (await get<Record<string, T[]>>(token, path, { signal }))[listKey] ?? [], 5000, `${token} ${path}`);
  return (
    <section>
      <PageHeader title={title} at={polled.at} error={polled.error} />
      <Table testId={listKey} rows={polled.data ?? []} rowId={rowId} empty={empty} columns={columns} />
    </section>
  );
}

/** A resource's name, or a muted placeholder when it has none. */
export function Name({ value }: { value: string | null }) {
  return value ? <>{value}</> : <span className="muted">(no name)</span>;
}
