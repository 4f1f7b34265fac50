/**
 * Backups (issue 15): repositories of content-addressed blobs in packs and manifests
 * on backup targets, the backup jobs, the backup service that runs them and
 * the API side. The front door of the folder.
 */
export * from './backup-target.ts';
export * from './posix-target.ts';
export * from './backup-repository.ts';
export { blobHash } from './backup-manifest.ts';
export * from './backup-jobs.ts';
export * from './backup-manager.ts';
export * from './backup-service.ts';
export * from './backup-quota.ts';
export * from './stuck-backups.ts';
export * from './volume-from-backup.ts';
export type { S3Target, S3TargetOptions } from './s3-target.ts';
export * from './backup-target-config.ts';
