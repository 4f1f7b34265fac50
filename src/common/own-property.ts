/**
 * Own-property access to records keyed by what a client sends: metadata and
 * extra spec keys, action names, sort keys. A plain object inherits
 * `constructor`, `toString`, `__proto__` … from `Object.prototype`; looking a
 * client's name up with `record[name]` or `name in record` finds those, and
 * `record[name] = value` with `__proto__` replaces the record's prototype
 * instead of storing the key. These helpers see only what the record itself holds.
 */

/**
 * The value a record holds under `key` itself, or undefined (never an
 * inherited member such as `constructor`).
 */
export function ownValue<V>(record: Readonly<Record<string, V>>, key: string): V | undefined {
  return Object.hasOwn(record, key) ? record[key] : undefined;
}

/**
 * Stores `value` under `key` as the record's own enumerable property, also for
 * `__proto__` (a plain assignment would set the record's prototype instead).
 */
export function setOwn<V>(record: Record<string, V>, key: string, value: V): void {
  Object.defineProperty(record, key, { value, enumerable: true, writable: true, configurable: true });
}
