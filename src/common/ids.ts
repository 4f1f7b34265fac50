/** Identifier helpers. */
import { randomUUID } from 'node:crypto';

/** A new random UUID (v4), the id form of every Basalt resource. */
export function newId(): string {
  return randomUUID();
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
