/**
 * Backups: repositories of content-addressed chunks and manifests on backup
 * targets (issue 15). The front door of the folder.
 */
export * from './backup-target.ts';
export * from './posix-target.ts';
export * from './backup-repository.ts';
