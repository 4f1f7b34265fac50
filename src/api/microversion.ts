/**
 * Microversion negotiation: `OpenStack-API-Version: volume 3.N` (or `latest`)
 * per request. No header means 3.0. The chosen version is echoed back with
 * `Vary: OpenStack-API-Version`.
 */
import { BasaltError, InvalidInputError } from '../errors/index.ts';

/** Oldest and newest microversions served (Cinder Zed's range). */
export const MIN_VERSION = '3.0';
export const MAX_VERSION = '3.70';

/** A negotiated `major.minor`. */
export class ApiVersion {
  constructor(readonly major: number, readonly minor: number) {}

  /** Parses `3.N`. @throws InvalidInputError in Cinder's words when malformed. */
  static parse(text: string): ApiVersion {
    const m = /^([1-9]\d*)\.(0|[1-9]\d*)$/.exec(text);
    if (!m) throw new InvalidInputError(`API Version String ${text} is of invalid format. Must be of format MajorNum.MinorNum.`);
    return new ApiVersion(Number(m[1]), Number(m[2]));
  }

  /** Whether this version is `v` or newer. */
  atLeast(v: string): boolean {
    const o = ApiVersion.parse(v);
    return this.major > o.major || (this.major === o.major && this.minor >= o.minor);
  }

  toString(): string {
    return `${this.major}.${this.minor}`;
  }
}

const MIN = ApiVersion.parse(MIN_VERSION);
const MAX = ApiVersion.parse(MAX_VERSION);

/**
 * The version a request asks for. The header may list several services
 * (`compute 2.1, volume 3.5`); only `volume` counts, and a header without it
 * counts as absent (3.0). `latest` is the newest served.
 * @throws InvalidInputError for a malformed version (400).
 */
export function requestedVersion(header: string | string[] | undefined): ApiVersion {
  const text = Array.isArray(header) ? header.join(',') : header;
  if (!text) return MIN;
  let requested: string | undefined;
  for (const part of text.split(',')) {
    const [service, version] = part.trim().split(/\s+/, 2);
    if (service?.toLowerCase() === 'volume') requested = version ?? '';
  }
  if (requested === undefined) return MIN;
  if (requested.toLowerCase() === 'latest') return MAX;
  return ApiVersion.parse(requested);
}

/**
 * The version a request is served at: the one it asks for.
 * @throws BasaltError VERSION_NOT_ACCEPTABLE (406) outside the served range.
 */
export function served(v: ApiVersion): ApiVersion {
  if (!v.atLeast(MIN_VERSION) || !MAX.atLeast(v.toString())) {
    throw new BasaltError('VERSION_NOT_ACCEPTABLE', `Version ${v} is not supported by the API. Minimum is ${MIN_VERSION} and maximum is ${MAX_VERSION}.`);
  }
  return v;
}

/**
 * {@link requestedVersion} then {@link served}.
 * @throws InvalidInputError (400), BasaltError VERSION_NOT_ACCEPTABLE (406).
 */
export function negotiate(header: string | string[] | undefined): ApiVersion {
  return served(requestedVersion(header));
}
