/** SHA-256 of the first `bytes` of a file, read asynchronously in 16 MiB pieces (a server under test may share this event loop). */
import { createHash } from 'node:crypto';
import fs from 'node:fs';

export async function fileDigest(file: string, bytes: number): Promise<string> {
  const h = createHash('sha256');
  const fh = await fs.promises.open(file, 'r');
  const buf = Buffer.alloc(16 * 1024 * 1024);
  try {
    for (let at = 0; at < bytes; at += buf.length) {
      const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, bytes - at), at);
      h.update(buf.subarray(0, bytesRead));
    }
  } finally {
    await fh.close();
  }
  return h.digest('hex');
}
