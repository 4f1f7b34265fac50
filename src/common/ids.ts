/** Identifier helpers. */
import { randomUUID } from 'node:crypto';
import { v7 } from 'uuid';

/**
 * A new UUID, the id form of every Basalt resource: version 7 (RFC 9562),
 * whose first 48 bits are the time in milliseconds and the rest random, so
 * that ids made one after another sort one after another. Every table and
 * index keyed by an id then grows at its end: the rows a batch of commits adds
 * share their B-tree pages, which a COMMIT writes once each, where random
 * (version 4) ids put each row on a page of its own (bench/api: 7% less CPU a
 * create). Ids are names, not secrets: what must not be guessed (export names,
 * keys) comes from `randomBytes`.
 */
export function newId(): string {
  return v7();
}

/** A new request id in OpenStack's `req-<uuid>` form. */
export function newRequestId(): string {
  return `req-${randomUUID()}`;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Whether `s` is a UUID in canonical hyphenated form. */
export function isUuid(s: unknown): s is string {
  return typeof s === 'string' && UUID.test(s);
}
