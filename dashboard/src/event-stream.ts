/**
 * Follows a project's event stream (`GET /v3/events/stream`, server-sent
 * events, experimental). The browser's EventSource cannot send the token or
 * the experimental header, so the stream is read through fetch and parsed
 * here; on a drop it reconnects with `Last-Event-ID`, which the server answers
 * with every later event and none twice.
 */
import { MICROVERSION, reportTokenRefused, type StatusEvent } from './api.ts';

/** One event as the stream sends it: the place in the stream as `id`, the event row's id as `event_id`, no project. */
export type StreamedEvent = Omit<StatusEvent, 'id' | 'project_id'> & { id: number; event_id: string };

/** What {@link followEvents} reports besides events. */
export interface StreamStatus {
  /** Whether the stream is open now. */
  connected: boolean;
  /** Why it is not, when it failed (the API's status line). */
  error?: string;
}

/** Wait before connecting again after a drop or a refusal. */
const RECONNECT_MS = 1000;

/**
 * Calls `onEvent` for every event of the token's project from now on until
 * `signal` aborts, and `onStatus` when the connection opens or drops.
 */
export async function followEvents(token: string, signal: AbortSignal, onEvent: (e: StreamedEvent) => void, onStatus: (s: StreamStatus) => void): Promise<void> {
  let lastId: number | undefined;
  while (!signal.aborted) {
    try {
      const headers: Record<string, string> = {
        'X-Auth-Token': token, 'OpenStack-API-Version': `volume ${MICROVERSION}`, 'OpenStack-API-Experimental': 'true', Accept: 'text/event-stream',
      };
      if (lastId !== undefined) headers['Last-Event-ID'] = String(lastId);
      const r = await fetch('/v3/events/stream', { headers, signal });
      if (r.status === 401) reportTokenRefused(`${r.status} ${r.statusText}`);
      if (!r.ok || !r.body) throw new Error(`event stream: ${r.status} ${r.statusText}`);
      onStatus({ connected: true });
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end: number;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const message = parseMessage(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
          if (message?.data === undefined) continue;
          const e = JSON.parse(message.data) as StreamedEvent;
          lastId = e.id;
          onEvent(e);
        }
      }
      onStatus({ connected: false });
    } catch (err) {
      if (signal.aborted) return;
      onStatus({ connected: false, error: (err as Error).message });
    }
    await new Promise((resolve) => setTimeout(resolve, RECONNECT_MS));
  }
}

/** The fields of one server-sent message (comments and `retry:` lines skipped). */
function parseMessage(block: string): { id?: string; event?: string; data?: string } | undefined {
  const out: { id?: string; event?: string; data?: string } = {};
  for (const line of block.split('\n')) {
    if (line.startsWith(':')) continue;
    const i = line.indexOf(':');
    const field = i < 0 ? line : line.slice(0, i);
    const value = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
    if (field === 'id') out.id = value;
    else if (field === 'event') out.event = value;
    else if (field === 'data') out.data = out.data === undefined ? value : `${out.data}\n${value}`;
  }
  return Object.keys(out).length > 0 ? out : undefined;
}
