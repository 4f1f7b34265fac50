/**
 * Request validation with JSON Schema (Ajv), reporting the first problem in
 * Cinder's words: `Invalid input for field/attribute size. Value: 0. 0 is less
 * than the minimum of 1`. Schemas are compiled once per schema object.
 */
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { InvalidInputError } from '../errors/index.ts';
import { isUuid } from '../common/index.ts';

const ajv = new Ajv({ allErrors: false, strict: false });
ajv.addFormat('uuid', { type: 'string', validate: (s: string) => isUuid(s) });

const compiled = new WeakMap<object, ValidateFunction>();

function show(v: unknown): string {
  return typeof v === 'string' ? v : JSON.stringify(v);
}

function reason(e: ErrorObject, value: unknown): string {
  const p = e.params as Record<string, unknown>;
  switch (e.keyword) {
    case 'minimum': return `${show(value)} is less than the minimum of ${p.limit}`;
    case 'maximum': return `${show(value)} is greater than the maximum of ${p.limit}`;
    case 'type': return `${JSON.stringify(value)} is not of type ${JSON.stringify(p.type)}`;
    case 'maxLength': return `${JSON.stringify(value)} is too long`;
    case 'minLength': return `${JSON.stringify(value)} is too short`;
    case 'pattern': return `${JSON.stringify(value)} does not match ${JSON.stringify(p.pattern)}`;
    case 'format': return `${JSON.stringify(value)} is not a '${p.format}'`;
    case 'additionalProperties': return `Additional properties are not allowed ('${p.additionalProperty}' was unexpected)`;
    case 'required': return `'${p.missingProperty}' is a required property`;
    case 'enum': return `${JSON.stringify(value)} is not one of ${JSON.stringify(p.allowedValues)}`;
    case 'maxProperties': return `${JSON.stringify(value)} has too many properties`;
    case 'minProperties': return `${JSON.stringify(value)} does not have enough properties`;
    default: return e.message ?? 'is invalid';
  }
}

function valueAt(data: unknown, pointer: string): unknown {
  let v = data;
  for (const seg of pointer.split('/').slice(1)) {
    v = (v as Record<string, unknown> | undefined)?.[seg.replace(/~1/g, '/').replace(/~0/g, '~')];
  }
  return v;
}

/**
 * Checks `data` against `schema`.
 * @throws InvalidInputError naming the first field that is wrong.
 */
export function validate<T>(schema: object, data: unknown): T {
  let fn = compiled.get(schema);
  if (!fn) compiled.set(schema, (fn = ajv.compile(schema)));
  if (fn(data)) return data as T;
  const e = fn.errors![0]!;
  const value = valueAt(data, e.instancePath);
  const segments = e.instancePath.split('/').filter(Boolean);
  const field = segments[segments.length - 1] ?? 'body';
  throw new InvalidInputError(`Invalid input for field/attribute ${field}. Value: ${show(value)}. ${reason(e, value)}`);
}

/** The largest size, in GiB, a volume may be created or extended to (Cinder's database integer limit). */
export const MAX_SIZE_GIB = 2147483647;

/** JSON Schema of a size in GiB: an integer, or a string of digits (Cinder accepts both). */
export const sizeSchema = {
  anyOf: [
    { type: 'integer', minimum: 1, maximum: MAX_SIZE_GIB },
    { type: 'string', pattern: '^[0-9]+$' },
  ],
} as const;

/**
 * Converts a validated size to a number, checking the range of string sizes too.
 * @throws InvalidInputError when out of range.
 */
export function toSize(field: string, value: number | string): number {
  const n = typeof value === 'string' ? Number(value) : value;
  if (n < 1) throw new InvalidInputError(`Invalid input for field/attribute ${field}. Value: ${value}. ${value} is less than the minimum of 1`);
  if (n > MAX_SIZE_GIB) throw new InvalidInputError(`Invalid input for field/attribute ${field}. Value: ${value}. ${value} is greater than the maximum of ${MAX_SIZE_GIB}`);
  return n;
}

/** Schema of a name or description: a string of at most 255 characters, or null. */
export const nameSchema = { type: ['string', 'null'], maxLength: 255 } as const;

/** Schema of a metadata object (Cinder's limits: keys 1–255, values up to 255 characters). */
export const metadataSchema = {
  type: 'object',
  propertyNames: { minLength: 1, maxLength: 255 },
  additionalProperties: { type: 'string', maxLength: 255 },
} as const;

/**
 * The action name and argument of an `…/action` body (`{"os-extend": {…}}`).
 * @throws InvalidInputError unless the body is an object with exactly one key.
 */
export function actionOf(body: unknown): [string, unknown] {
  if (!body || typeof body !== 'object' || Array.isArray(body) || Object.keys(body).length !== 1) {
    throw new InvalidInputError('Invalid input received: an action body has exactly one key, the action name.');
  }
  return Object.entries(body)[0]!;
}
