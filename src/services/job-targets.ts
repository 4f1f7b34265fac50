/**
 * Job targets: who may claim a job. `scheduler`; `volume:<cluster>`, any live
 * member of a backend's cluster; `member:<host@backend>`, one member (work
 * that must run where a volume is exported, e.g. a snapshot that quiesces
 * that member's NBD connections — when the member dies, cleanup moves its
 * queued jobs back to the cluster's target).
 */

/** The job target of a volume cluster. */
export function volumeTarget(cluster: string): string {
  return `volume:${cluster}`;
}

/** The job target of one volume service (`host@backend`). */
export function memberTarget(serviceHost: string): string {
  return `member:${serviceHost}`;
}

/** The services that read a target's jobs: a binary and, for volume targets, the cluster or the one host. */
export type TargetReaders = { binary: 'cinder-scheduler' } | { binary: 'cinder-volume'; cluster: string } | { binary: 'cinder-volume'; host: string };

/** Who reads the jobs of `target`, or undefined for a target of no service. */
export function targetReaders(target: string): TargetReaders | undefined {
  if (target === 'scheduler') return { binary: 'cinder-scheduler' };
  if (target.startsWith('volume:')) return { binary: 'cinder-volume', cluster: target.slice('volume:'.length) };
  if (target.startsWith('member:')) return { binary: 'cinder-volume', host: target.slice('member:'.length) };
  return undefined;
}
