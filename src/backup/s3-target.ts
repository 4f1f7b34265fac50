/**
 * The `s3` backup target: objects in a bucket of any S3-compatible store
 * (AWS, Ceph's radosgw, MinIO …) through the official AWS SDK v3 client,
 * under an optional key prefix. An object is written by one PUT, which the
 * store commits whole or not at all, and is durable once the PUT is answered.
 */
import {
  DeleteObjectCommand, GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client, S3ServiceException,
} from '@aws-sdk/client-s3';
import { DriverError } from '../errors/index.ts';
import type { BackupTarget } from './backup-target.ts';

/** Where and how to reach the bucket (Cinder's `backup_s3_*` options, by meaning). */
export interface S3TargetOptions {
  /** The store's URL, e.g. `http://127.0.0.1:7480`; absent: AWS's own endpoint for `region`. */
  endpoint?: string;
  /** Default `us-east-1` (what most S3-compatible stores accept). */
  region?: string;
  bucket: string;
  /** Keys go under this prefix (no leading or trailing `/`); default none. */
  prefix?: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** Path-style addressing (`endpoint/bucket/key`), which stores without per-bucket DNS need. Default true. */
  forcePathStyle?: boolean;
  /** How long one request may take before it counts as the store being unreachable. Default 60 s. */
  requestTimeoutMs?: number;
}

/** HTTP statuses and error names that mean "try again later", not "wrong". */
const RETRYABLE_STATUS = new Set([408, 429, 500, 502, 503, 504]);
const RETRYABLE_NAMES = new Set(['TimeoutError', 'RequestTimeout', 'SlowDown', 'ServiceUnavailable', 'InternalError', 'ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EAI_AGAIN']);

/** An S3 bucket as a backup target. */
export class S3Target implements BackupTarget {
  readonly kind = 's3';
  readonly location: string;
  private readonly client: S3Client;
  private readonly bucket: string;
  private readonly prefix: string;

  constructor(o: S3TargetOptions) {
    this.bucket = o.bucket;
    this.prefix = o.prefix ? `${o.prefix.replace(/^\/+|\/+$/g, '')}/` : '';
    this.location = `s3://${o.bucket}/${this.prefix}`;
    this.client = new S3Client({
      region: o.region ?? 'us-east-1',
      ...(o.endpoint ? { endpoint: o.endpoint } : {}),
      forcePathStyle: o.forcePathStyle ?? true,
      credentials: { accessKeyId: o.accessKeyId, secretAccessKey: o.secretAccessKey },
      requestHandler: { requestTimeout: o.requestTimeoutMs ?? 60_000 },
      // The SDK's own retries (with back-off) cover a store's brief hiccups; a
      // failure that outlasts them fails the job, which is retried later.
      maxAttempts: 3,
    });
  }

  async put(key: string, data: Buffer): Promise<void> {
    await this.call(`store ${key}`, () => this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: this.prefix + key, Body: data, ContentLength: data.length })));
  }

  async get(key: string): Promise<Buffer | undefined> {
    return this.call(`read ${key}`, async () => {
      try {
        const r = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.prefix + key }));
        return Buffer.from(await r.Body!.transformToByteArray());
      } catch (err) {
        if ((err as { name?: string }).name === 'NoSuchKey') return undefined; // a missing bucket stays an error
        throw err;
      }
    });
  }

  async has(key: string): Promise<boolean> {
    return this.call(`look for ${key}`, async () => {
      try {
        await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.prefix + key }));
        return true;
      } catch (err) {
        // HEAD has no body to name the error: a 404 is a missing key (a missing bucket fails the next PUT by name).
        if ((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404) return false;
        throw err;
      }
    });
  }

  async delete(key: string): Promise<void> {
    // S3 answers a DELETE of a missing key with success: idempotent as the contract asks.
    await this.call(`remove ${key}`, () => this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.prefix + key })));
  }

  async list(prefix: string): Promise<string[]> {
    return this.call(`list ${prefix}`, async () => {
      const out: string[] = [];
      let token: string | undefined;
      do {
        const r = await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.prefix + prefix, ContinuationToken: token }));
        for (const o of r.Contents ?? []) if (o.Key) out.push(o.Key.slice(this.prefix.length));
        token = r.IsTruncated ? r.NextContinuationToken : undefined;
      } while (token);
      return out;
    });
  }

  /** Releases the client's connections. */
  close(): void {
    this.client.destroy();
  }

  /** Runs one request; a failure becomes a driver error naming the target, retryable when the store is unreachable or busy. */
  private async call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      const e = err as { name?: string; code?: string; $metadata?: { httpStatusCode?: number } };
      const status = e.$metadata?.httpStatusCode;
      const retryable = (status !== undefined && RETRYABLE_STATUS.has(status)) || RETRYABLE_NAMES.has(e.name ?? '') || RETRYABLE_NAMES.has(e.code ?? '');
      const why = err instanceof S3ServiceException ? `${err.name}${status ? ` (HTTP ${status})` : ''}` : (e.code ?? e.name ?? 'error');
      throw new DriverError(`Backup target ${this.location}: cannot ${what}: ${why}`, { cause: err, retryable });
    }
  }
}
