/**
 * The list endpoints of resources (`/volumes`, `/volumes/detail`,
 * `/snapshots`, …): the shared query parameters — paging, `all_tenants` and
 * `project_id` for admins, `name`, `status`, `metadata`, `with_count` — and
 * the collection body with its next link.
 */
import type { FastifyRequest } from 'fastify';
import type { Database, ResourceFilter, ResourceRepository } from '../db/index.ts';
import type { Kysely } from 'kysely';
import { InvalidInputError, NotFoundError } from '../errors/index.ts';
import { scopeOf } from '../volume/index.ts';
import { nextLinks, parsePaging, queryValue, truthy } from './pagination.ts';
import { MAX_BODY_DEPTH, nestingDepth } from './json-body.ts';

/** How one resource's list works. */
export interface ResourceListOptions<Row extends { id: string; project_id: string; status: string }, F extends ResourceFilter> {
  db: Kysely<Database>;
  repo: ResourceRepository<Row, F>;
  /** `volumes`, `snapshots`: the body key (and `<key>_links`). */
  collection: string;
  sortKeys: Record<string, keyof Row & string>;
  maxLimit: number;
  /** Adds the resource's own filters from the query. */
  narrow(q: Record<string, unknown>, filter: F): void;
  /** Summary views of rows (`GET /<collection>`; may load related data in bulk). */
  summaries(req: FastifyRequest, rows: Row[]): Promise<Record<string, unknown>[]>;
  /** Detailed views of rows (`GET /<collection>/detail`). */
  details(req: FastifyRequest, rows: Row[]): Promise<Record<string, unknown>[]>;
}

/**
 * Parses a `metadata` filter. Clients send JSON or, like cinderclient, a
 * Python dict literal (`{'k': 'v'}`).
 * @throws InvalidInputError when it is neither.
 */
export function parseMetadataFilter(text: string): Record<string, string> {
  // Values are flattened with String(): a deeply nested one must not recurse through the stack.
  if (nestingDepth(text, MAX_BODY_DEPTH) > MAX_BODY_DEPTH) throw new InvalidInputError(`Invalid input received: metadata filter is nested deeper than ${MAX_BODY_DEPTH} levels`);
  for (const candidate of [text, text.replace(/'/g, '"')]) {
    try {
      const v = JSON.parse(candidate) as unknown;
      if (v && typeof v === 'object' && !Array.isArray(v)) {
        return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, String(x)]));
      }
    } catch { /* try the next form */ }
  }
  throw new InvalidInputError(`Invalid input received: metadata filter ${text} is not a JSON object`);
}

/**
 * The filter of a list query: the caller's scope (an admin's `all_tenants`,
 * optionally narrowed to `project_id`), `name`, `status`, `metadata` and the
 * resource's own filters.
 * @throws InvalidInputError for a malformed metadata filter.
 */
export function listFilter<F extends ResourceFilter>(o: { narrow(q: Record<string, unknown>, filter: F): void }, req: FastifyRequest): F {
  const q = req.query as Record<string, unknown>;
  const allTenants = truthy(queryValue(q, 'all_tenants'));
  const filter = { scope: scopeOf(req.caller, allTenants) } as F;
  const project = queryValue(q, 'project_id');
  if (req.caller.isAdmin && allTenants && project) filter.scope = { projectId: project };
  const name = queryValue(q, 'name') ?? queryValue(q, 'display_name');
  if (name !== undefined) filter.name = name;
  const status = queryValue(q, 'status');
  if (status !== undefined) filter.status = status;
  const md = queryValue(q, 'metadata');
  if (md !== undefined) filter.metadata = parseMetadataFilter(md);
  o.narrow(q, filter);
  return filter;
}

/** Builds the handler of `GET /<collection>` (summary) or `/<collection>/detail`. */
export function resourceList<Row extends { id: string; project_id: string; status: string }, F extends ResourceFilter>(
  o: ResourceListOptions<Row, F>, detail: boolean,
) {
  return async (req: FastifyRequest): Promise<Record<string, unknown>> => {
    const q = req.query as Record<string, unknown>;
    const paging = parsePaging(q, o.sortKeys, o.maxLimit, [{ column: 'created_at' as keyof Row & string, dir: 'desc' }]);
    const filter = listFilter(o, req);
    let marker: Row | undefined;
    if (paging.marker !== undefined) {
      marker = await o.repo.get(o.db, paging.marker, filter.scope);
      if (!marker) throw new NotFoundError(`Marker ${paging.marker} could not be found.`);
    }
    const rows = await o.repo.list(o.db, filter, paging.sort, paging.limit, marker, paging.offset);
    const body: Record<string, unknown> = { [o.collection]: detail ? await o.details(req, rows) : await o.summaries(req, rows) };
    const next = nextLinks(req, paging, rows);
    if (next) body[`${o.collection}_links`] = next;
    if (req.apiVersion.atLeast('3.45') && truthy(queryValue(q, 'with_count'))) body.count = await o.repo.count(o.db, filter);
    return body;
  };
}
