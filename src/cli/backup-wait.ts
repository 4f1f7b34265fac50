/**
 * `--wait` of the backup commands: follows a backup until it settles,
 * showing how far its backup or restore is and how fast it goes, as the
 * server reports them (`GET /backups/{id}/progress`) — a bar on a terminal,
 * a line per tenth otherwise — and says how it ended.
 */
import { Presets, SingleBar } from 'cli-progress';
import type { ApiClient } from './api-client.ts';

/** How often the backup is read while waiting. */
const POLL_MS = 250;

/** Statuses a backup rests in. */
const SETTLED = new Set(['available', 'error', 'error_restoring']);

/** How far a backup or restore is, as `GET /backups/{id}/progress` reports it. */
interface ReportedProgress { percent: number; done_bytes: number; total_bytes: number; bytes_per_second?: number | null }

const MIB = 2 ** 20;

/** `12.3 MiB/s` (one decimal below 100), or `…` while the server reports no rate. */
export function rateText(bytesPerSecond: number | null | undefined): string {
  if (bytesPerSecond === null || bytesPerSecond === undefined) return '… MiB/s';
  const mib = bytesPerSecond / MIB;
  return `${mib < 100 ? mib.toFixed(1) : Math.round(mib)} MiB/s`;
}

/**
 * Progress on stderr: a bar (cli-progress) when stderr is a terminal, else a
 * plain line each tenth — so the id on stdout stays alone for scripts, and a
 * log gets lines, not redraws.
 */
function progressDisplay(what: string): { update(p: ReportedProgress): void; stop(): void } {
  if (process.stderr.isTTY) {
    const bar = new SingleBar({ format: `${what} {bar} {percentage}% | {done} of {total_mib} MiB | {rate}`, stream: process.stderr }, Presets.shades_classic);
    let started = false;
    return {
      update(p) {
        const values = { done: Math.round(p.done_bytes / MIB), total_mib: Math.round(p.total_bytes / MIB), rate: rateText(p.bytes_per_second) };
        if (!started) bar.start(100, p.percent, values);
        started = true;
        bar.update(p.percent, values);
      },
      stop: () => { if (started) bar.stop(); },
    };
  }
  let shown = -1;
  return {
    update(p) {
      const tenth = Math.floor(p.percent / 10);
      if (tenth > shown) process.stderr.write(`${what}: ${(shown = tenth) * 10}% (${p.done_bytes} of ${p.total_bytes} bytes, ${rateText(p.bytes_per_second)})\n`);
    },
    stop: () => undefined,
  };
}

/**
 * Waits for backup `id` to settle; resolves with its final row.
 * @throws BasaltError when it ends in an error status (with its fail reason), or cannot be read.
 */
export async function waitForBackup(api: ApiClient, id: string, what: string): Promise<Record<string, unknown>> {
  const display = progressDisplay(what);
  try {
    for (;;) {
      const { backup } = await api.call<{ backup: Record<string, unknown> }>('GET', `/backups/${id}`);
      if (SETTLED.has(String(backup.status))) return backup;
      const { progress } = await api.call<{ progress: ReportedProgress | null }>('GET', `/backups/${id}/progress`, undefined, { experimental: true });
      if (progress) display.update(progress);
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  } finally {
    display.stop();
  }
}
