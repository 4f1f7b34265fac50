/**
 * The REST client the CLI is built on: talks to any Basalt (or Cinder)
 * endpoint with noauth credentials, and turns fault bodies into errors.
 */
import { BasaltError } from '../errors/index.ts';

/** Where and as whom to talk. */
export interface ClientOptions {
  /** Base URL, e.g. `http://127.0.0.1:8776`. */
  url: string;
  project: string;
  user: string;
  /** Microversion to ask for. */
  version?: string;
}

/** How one call is made. */
export interface CallOptions {
  /** Whether the route is an experimental API (sends `OpenStack-API-Experimental: true`). Default false. */
  experimental?: boolean;
}

/** A thin client over `/v3/{project}`. */
export class ApiClient {
  constructor(private readonly o: ClientOptions) {}

  /**
   * One request; returns the parsed body.
   * @throws BasaltError with the fault's message on a 4xx/5xx answer.
   */
  async call<T = any>(method: string, path: string, body?: unknown, o: CallOptions = {}): Promise<T> { // eslint-disable-line @typescript-eslint/no-explicit-any
    const res = await fetch(`${this.o.url.replace(/\/$/, '')}/v3/${this.o.project}${path}`, {
      method,
      headers: {
        'X-Auth-Token': `${this.o.user}:${this.o.project}`,
        'OpenStack-API-Version': `volume ${this.o.version ?? '3.54'}`,
        ...(o.experimental ? { 'OpenStack-API-Experimental': 'true' } : {}),
        ...(body === undefined ? {} : { 'Content-Type': 'application/json' }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    const parsed = text ? JSON.parse(text) as Record<string, { message?: string }> : undefined;
    if (!res.ok) {
      const fault = parsed ? Object.values(parsed)[0] : undefined;
      throw new BasaltError(res.status === 404 ? 'NOT_FOUND' : 'INVALID_INPUT', `${method} ${path}: ${fault?.message ?? res.statusText} (HTTP ${res.status})`);
    }
    return parsed as T;
  }
}
