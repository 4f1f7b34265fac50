/**
 * Request body declarations: each route that reads a body declares its JSON
 * Schema once, in its route options, and both its validation and the OpenAPI
 * document (`openapi.ts`) read that one declaration.
 *
 * A plain route declares one schema, or one per range of microversions
 * ({@link body}, {@link versionedBody}); an `…/action` route declares one
 * schema per action key ({@link actionBodies}). Handlers then call
 * {@link validBody}, or {@link requestedAction} and {@link validAction}, at the
 * point where they check their input, so the order of Cinder's checks (and its
 * error wording, from `validation.ts`) is what it was.
 */
import type { FastifyRequest } from 'fastify';
import { ownValue } from '../common/index.ts';
import { InvalidInputError } from '../errors/index.ts';
import { ApiVersion } from './microversion.ts';
import { actionOf, validate } from './validation.ts';

/** A range of microversions: `since` the first one, `before` the first one past it. Both optional (open). */
export interface VersionRange {
  /** The first microversion it applies to. Default: every version from 3.0. */
  readonly since?: string;
  /** The first microversion it no longer applies to. Default: none (up to the newest). */
  readonly before?: string;
}

/** A request body schema for a range of microversions. */
export interface VersionedSchema extends VersionRange {
  /** JSON Schema of the whole body. */
  readonly schema: object;
}

/** One action of an `…/action` route: the key of its body, the schema of its argument, the microversions it exists at. */
export interface ActionDeclaration extends VersionRange {
  /** JSON Schema of the argument (the value under the action's key). Absent: the argument is not read. */
  readonly schema?: object;
  /** Whether a `null` argument stands for `{}` (Cinder's `{"os-attach": null}`). Default false. */
  readonly nullIsEmpty?: boolean;
}

/** What a route declares about its request body. */
export type BodyDeclaration =
  | { readonly variants: readonly VersionedSchema[] }
  | { readonly actions: Readonly<Record<string, ActionDeclaration>> };

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The route's request body declaration. Default: the route reads no body. */
    body?: BodyDeclaration;
  }
}

/** Route options declaring one body schema for every microversion. */
export function body(schema: object): { config: { body: BodyDeclaration } } {
  return { config: { body: { variants: [{ schema }] } } };
}

/**
 * Route options declaring one body schema per range of microversions. The
 * ranges must not overlap; a test checks that every microversion has exactly one.
 */
export function versionedBody(...variants: VersionedSchema[]): { config: { body: BodyDeclaration } } {
  return { config: { body: { variants } } };
}

/** Route options declaring the actions of an `…/action` route, by body key. */
export function actionBodies(declared: Record<string, ActionDeclaration>): { config: { body: BodyDeclaration } } {
  return { config: { body: { actions: declared } } };
}

/** Whether `version` is inside `range`. */
export function inRange(version: ApiVersion, range: VersionRange): boolean {
  return (range.since === undefined || version.atLeast(range.since)) && (range.before === undefined || !version.atLeast(range.before));
}

/** The last microversion before `v` (`3.53` → `3.52`), for documents that state inclusive ranges. */
export function versionBefore(v: string): string {
  const p = ApiVersion.parse(v);
  return `${p.major}.${p.minor - 1}`;
}

/** What the route serving `req` declares. @throws Error (a bug: a 500) when it declares nothing of the kind. */
function declared(req: FastifyRequest, kind: 'variants'): readonly VersionedSchema[];
function declared(req: FastifyRequest, kind: 'actions'): Readonly<Record<string, ActionDeclaration>>;
function declared(req: FastifyRequest, kind: 'variants' | 'actions'): unknown {
  const d = req.routeOptions.config.body as Record<string, unknown> | undefined;
  if (!d || !(kind in d)) throw new Error(`${req.method} ${req.routeOptions.url} reads a body it does not declare (src/api/body-declaration.ts)`);
  return d[kind];
}

/**
 * The request body, checked against the schema the route declares for the
 * request's microversion. `data` replaces the body where the route gives an
 * absent one a meaning (e.g. `req.body ?? null`).
 * @throws InvalidInputError naming the first field that is wrong (400).
 */
export function validBody<T>(req: FastifyRequest, data: unknown = req.body): T {
  const variant = declared(req, 'variants').find((v) => inRange(req.apiVersion, v));
  if (!variant) throw new Error(`${req.method} ${req.routeOptions.url} declares no body for ${req.apiVersion}`);
  return validate<T>(variant.schema, data);
}

/** The action a body names (its only key): the name and the declaration. */
function actionNamed(req: FastifyRequest, name: string): ActionDeclaration | undefined {
  const a = ownValue(declared(req, 'actions'), name);
  return a && inRange(req.apiVersion, a) ? a : undefined;
}

/**
 * The action an `…/action` body names, and its argument (not yet checked:
 * see {@link validAction}).
 * @throws InvalidInputError unless the body is an object with one key, and
 *   `There is no such action: X` for an action the route does not declare at
 *   the request's microversion.
 */
export function requestedAction(req: FastifyRequest): [string, unknown] {
  const [name, arg] = actionOf(req.body);
  if (!actionNamed(req, name)) throw new InvalidInputError(`There is no such action: ${name}`);
  return [name, arg];
}

/**
 * The argument of the action the body names (its first key), checked against
 * the schema the route declares for that action.
 * @throws InvalidInputError naming the first field that is wrong (400), and
 *   `There is no such action: X` for an undeclared one.
 */
export function validAction<T>(req: FastifyRequest, arg: unknown): T {
  const name = Object.keys((req.body ?? {}) as object)[0] ?? '';
  const a = actionNamed(req, name);
  if (!a) throw new InvalidInputError(`There is no such action: ${name}`);
  const value = arg === null && a.nullIsEmpty ? {} : arg;
  return (a.schema ? validate<T>(a.schema, value) : value) as T;
}
