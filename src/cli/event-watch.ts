/**
 * `basalt event watch`: follows a project's events (the experimental
 * `GET /events/stream`, server-sent events parsed by eventsource-parser) as
 * table lines or JSON lines, and picks up where it was with `Last-Event-ID`
 * when the connection drops — no event missed, none twice.
 */
import { createParser, type EventSourceMessage } from 'eventsource-parser';
import type { ApiClient } from './api-client.ts';
import { CliError, EXIT } from './exit-codes.ts';

/** An event as the stream sends it. */
interface StreamedEvent { id: number; event: string; resource_type: string; resource_id: string; from_status: string | null; to_status: string | null; created_at: string }

/** How `watch` runs. */
export interface WatchOptions {
  /** Start after this event id (0: every event kept); default: from now on. */
  from?: number;
  /** Stop after this many events; default: never. */
  count?: number;
  json: boolean;
  /** Gives up after this many connection attempts in a row fail. */
  retries?: number;
}

/** One event as a line for people. */
function line(e: StreamedEvent): string {
  const change = e.from_status || e.to_status ? ` ${e.from_status ?? '-'} -> ${e.to_status ?? '-'}` : '';
  return `${e.id}\t${e.created_at}\t${e.event}\t${e.resource_type} ${e.resource_id}${change}`;
}

/** Follows the stream until `count` events were printed (or forever). */
export async function watchEvents(api: ApiClient, o: WatchOptions): Promise<void> {
  let last = o.from;
  let printed = 0;
  let failures = 0;
  for (;;) {
    const res = await api.stream(last === undefined ? '/events/stream' : `/events/stream?last_event_id=${last}`, last === undefined ? {} : { 'Last-Event-ID': String(last) })
      .catch((err: unknown) => {
        if (err instanceof CliError && err.exitCode === EXIT.unreachable && ++failures < (o.retries ?? 30)) return undefined;
        throw err;
      });
    if (!res) {
      await new Promise((r) => setTimeout(r, 1000));
      continue;
    }
    failures = 0;
    let done = false;
    const parser = createParser({
      onEvent(m: EventSourceMessage) {
        if (done) return;
        const e = JSON.parse(m.data) as StreamedEvent;
        last = e.id;
        console.log(o.json ? JSON.stringify(e) : line(e));
        if (o.count !== undefined && ++printed >= o.count) done = true;
      },
    });
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    try {
      while (!done) {
        const { value, done: ended } = await reader.read();
        if (ended) break;
        parser.feed(decoder.decode(value, { stream: true }));
      }
    } catch {
      // The connection dropped: connect again from the last event seen.
    } finally {
      await reader.cancel().catch(() => undefined);
    }
    if (done) return;
    await new Promise((r) => setTimeout(r, 500));
  }
}
