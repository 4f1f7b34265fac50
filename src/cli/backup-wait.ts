/**
 * `--wait` of the backup commands: follows a backup until it settles,
 * showing how far its backup or restore is (`GET /backups/{id}/progress`) —
 * a bar on a terminal, a line per tenth otherwise — and says how it ended.
 */
import { Presets, SingleBar } from 'cli-progress';
import type { ApiClient } from './api-client.ts';

/** How often the backup is read while waiting. */
const POLL_MS = 250;

/** Statuses a backup rests in. */
const SETTLED = new Set(['available', 'error', 'error_restoring']);

/** Progress lines or a bar on stderr. */
function progressDisplay(what: string): { update(percent: number, done: number, total: number): void; stop(): void } {
  if (process.stderr.isTTY) {
    const bar = new SingleBar({ format: `${what} {bar} {percentage}% | {done} of {total_mib} MiB`, stream: process.stderr }, Presets.shades_classic);
    let started = false;
    return {
      update(percent, done, total) {
        if (!started) bar.start(100, 0, { done: 0, total_mib: Math.round(total / 2 ** 20) });
        started = true;
        bar.update(percent, { done: Math.round(done / 2 ** 20), total_mib: Math.round(total / 2 ** 20) });
      },
      stop: () => { if (started) bar.stop(); },
    };
  }
  let shown = -1;
  return {
    update(percent, done, total) {
      const tenth = Math.floor(percent / 10);
      if (tenth > shown) process.stderr.write(`${what}: ${(shown = tenth) * 10}% (${done} of ${total} bytes)\n`);
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
      const { progress } = await api.call<{ progress: { percent: number; done_bytes: number; total_bytes: number } | null }>('GET', `/backups/${id}/progress`, undefined, { experimental: true });
      if (progress) display.update(progress.percent, progress.done_bytes, progress.total_bytes);
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  } finally {
    display.stop();
  }
}
