/**
 * Job targets: who may claim a job. `scheduler`; `volume:<cluster>`, any live
 * member of a backend's cluster; `member:<host@backend>`, one member (work
 * that must run where a volume is exported, e.g. a snapshot that quiesces
 * that member's NBD connections — when the member dies, cleanup moves its
 * queued jobs back to the cluster's target); `backup`, any backup service;
 * `backup:<cluster>`, a backup service running in a process that serves the
 * cluster (it reads and writes volumes through that process's drivers);
 * `backup-member:<host@backend>`, the backup service of the process serving
 * that member (a backup of an attached volume quiesces the member's export).
 */

/** The job target of a volume cluster. */
export function volumeTarget(cluster: string): string {
  return `volume:${cluster}`;
}

/** The job target of one volume service (`host@backend`). */
export function memberTarget(serviceHost: string): string {
  return `member:${serviceHost}`;
}

/** The target of backup jobs any backup service may run (deletes: they touch no volume). */
export const ANY_BACKUP_TARGET = 'backup';

/** The job target of backup work on a volume of `cluster`. */
export function backupTarget(cluster: string): string {
  return `backup:${cluster}`;
}

/** The job target of backup work that must run in the process of one volume service (`host@backend`). */
export function backupMemberTarget(serviceHost: string): string {
  return `backup-member:${serviceHost}`;
}

/** The backup target matching where a volume's snapshot runs (`volumeTarget` or `memberTarget`). */
export function backupTargetFor(volumeOrMemberTarget: string): string {
  if (volumeOrMemberTarget.startsWith('member:')) return backupMemberTarget(volumeOrMemberTarget.slice('member:'.length));
  if (volumeOrMemberTarget.startsWith('volume:')) return backupTarget(volumeOrMemberTarget.slice('volume:'.length));
  throw new Error(`${volumeOrMemberTarget} is not a volume service's target`);
}

/** The services that read a target's jobs: a binary and, for volume targets, the cluster or the one host. */
export type TargetReaders = { binary: 'cinder-scheduler' } | { binary: 'cinder-backup' } | { binary: 'cinder-volume'; cluster: string } | { binary: 'cinder-volume'; host: string };

/** Who reads the jobs of `target`, or undefined for a target of no service. */
export function targetReaders(target: string): TargetReaders | undefined {
  if (target === 'scheduler') return { binary: 'cinder-scheduler' };
  if (target.startsWith('volume:')) return { binary: 'cinder-volume', cluster: target.slice('volume:'.length) };
  if (target.startsWith('member:')) return { binary: 'cinder-volume', host: target.slice('member:'.length) };
  if (target === ANY_BACKUP_TARGET || target.startsWith('backup:') || target.startsWith('backup-member:')) return { binary: 'cinder-backup' };
  return undefined;
}
