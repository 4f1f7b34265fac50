/**
 * List query parameters shared by every collection: `limit`, `marker`,
 * `offset`, `sort` (`key:dir,…`) or `sort_key`/`sort_dir`, and the `…_links` next link.
 */
import type { FastifyRequest } from 'fastify';
import { ownValue } from '../common/index.ts';
import { InvalidInputError } from '../errors/index.ts';
import { baseUrl } from './context.ts';

/** One sort key. */
export interface SortSpec<C extends string> { column: C; dir: 'asc' | 'desc' }

/** Parsed paging parameters. */
export interface Paging<C extends string> {
  limit: number;
  /** Whether the client gave a limit (then a full page gets a next link). */
  limited: boolean;
  marker: string | undefined;
  /** Rows skipped (after the marker). */
  offset: number;
  sort: SortSpec<C>[];
}

/** A single query value (the last one when repeated). */
export function queryValue(q: Record<string, unknown>, name: string): string | undefined {
  const v = q[name];
  if (Array.isArray(v)) return v.length ? String(v[v.length - 1]) : undefined;
  return v === undefined ? undefined : String(v);
}

/** Whether a query flag is set (`1`, `true`, `yes`, `on`). */
export function truthy(text: string | undefined): boolean {
  return text !== undefined && ['1', 'true', 'yes', 'on'].includes(text.toLowerCase());
}

/**
 * Parses paging from the query.
 * @throws InvalidInputError for a bad limit, offset, sort key or direction.
 */
export function parsePaging<C extends string>(
  q: Record<string, unknown>, keys: Record<string, C>, maxLimit: number, defaultSort: SortSpec<C>[],
): Paging<C> {
  const limitText = queryValue(q, 'limit');
  let limit = maxLimit;
  if (limitText !== undefined) {
    if (!/^\d+$/.test(limitText)) throw new InvalidInputError(`Invalid input received: limit param must be an integer`);
    limit = Math.min(Number(limitText), maxLimit);
  }
  const offsetText = queryValue(q, 'offset');
  if (offsetText !== undefined && !/^\d{1,15}$/.test(offsetText)) throw new InvalidInputError(`Invalid input received: offset param must be an integer`);
  const offset = offsetText === undefined ? 0 : Number(offsetText);
  const parseDir = (d: string | undefined): 'asc' | 'desc' => {
    const dir = (d ?? 'desc').toLowerCase();
    if (dir !== 'asc' && dir !== 'desc') throw new InvalidInputError(`Invalid input received: Unknown sort direction, must be 'desc' or 'asc'`);
    return dir;
  };
  const key = (k: string): C => {
    // Own keys only: `constructor` or `toString` is no column.
    const c = ownValue(keys, k);
    if (!c) throw new InvalidInputError(`Invalid input received: Invalid sort key ${k}`);
    return c;
  };
  let sort = defaultSort;
  const sortText = queryValue(q, 'sort');
  const sortKey = queryValue(q, 'sort_key');
  if (sortText !== undefined && sortKey !== undefined) {
    throw new InvalidInputError("Invalid input received: The 'sort_key' and 'sort_dir' parameters are deprecated and cannot be used with the 'sort' parameter.");
  }
  if (sortText !== undefined) {
    sort = sortText.split(',').filter(Boolean).map((part) => {
      const [k, d] = part.split(':');
      return { column: key(k!.trim()), dir: parseDir(d?.trim()) };
    });
  } else if (sortKey !== undefined) {
    const dirs = (queryValue(q, 'sort_dir') ?? '').split(',');
    sort = sortKey.split(',').map((k, i) => ({ column: key(k.trim()), dir: parseDir(dirs[i] || dirs[0] || undefined) }));
  }
  return { limit, limited: limitText !== undefined, marker: queryValue(q, 'marker'), offset, sort };
}

/**
 * The `…_links` array with a `next` link when the page is full, or undefined.
 * The link repeats the request's query with `marker` set to the last item.
 */
export function nextLinks(req: FastifyRequest, paging: Paging<string>, items: { id: string }[]): { href: string; rel: string }[] | undefined {
  if (items.length === 0 || items.length < paging.limit) return undefined;
  const url = new URL(req.url, baseUrl(req));
  url.searchParams.set('marker', items[items.length - 1]!.id);
  if (!url.searchParams.has('limit')) url.searchParams.set('limit', String(paging.limit));
  return [{ href: url.toString(), rel: 'next' }];
}
