/**
 * The backup target a deployment configures (`[DEFAULT] backup_driver` and
 * the options of the chosen target).
 */
import type { DefaultOptions } from '../config/index.ts';
import { ConfigError } from '../errors/index.ts';
import type { BackupTarget } from './backup-target.ts';
import { PosixTarget } from './posix-target.ts';
import type { S3Target, S3TargetOptions } from './s3-target.ts';

/**
 * An s3 target. The AWS SDK is loaded only here, when a deployment (or a
 * test) uses S3: a server on the posix target does not pay its start-up time
 * and memory.
 */
export async function s3Target(o: S3TargetOptions): Promise<S3Target> {
  const { S3Target } = await import('./s3-target.ts');
  return new S3Target(o);
}

/**
 * Makes the configured target.
 * @throws ConfigError when `s3` is chosen without its bucket or credentials.
 */
export async function configuredBackupTarget(d: Pick<DefaultOptions, 'backup_driver' | 'backup_posix_path' | 'backup_s3_endpoint_url' | 'backup_s3_store_bucket'
  | 'backup_s3_store_access_key' | 'backup_s3_store_secret_key' | 'backup_s3_timeout'>): Promise<BackupTarget> {
  if (d.backup_driver !== 's3') return new PosixTarget(d.backup_posix_path);
  const missing = (['backup_s3_store_bucket', 'backup_s3_store_access_key', 'backup_s3_store_secret_key'] as const).filter((k) => !d[k]);
  if (missing.length) throw new ConfigError(`backup_driver = s3 needs ${missing.join(', ')}`);
  return s3Target({
    ...(d.backup_s3_endpoint_url ? { endpoint: d.backup_s3_endpoint_url } : {}),
    bucket: d.backup_s3_store_bucket, accessKeyId: d.backup_s3_store_access_key, secretAccessKey: d.backup_s3_store_secret_key,
    requestTimeoutMs: d.backup_s3_timeout * 1000,
  });
}
