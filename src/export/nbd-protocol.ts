/**
 * Constants of the NBD protocol (the NBD project's doc/proto.md), fixed
 * newstyle negotiation with structured replies.
 */

export const NBD_MAGIC = 0x4e42444d41474943n; // "NBDMAGIC"
export const IHAVEOPT = 0x49484156454f5054n; // "IHAVEOPT"
export const OPTION_REPLY_MAGIC = 0x3e889045565a9n;
export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

/** Handshake flags (server) and client flags. */
export const FLAG_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_NO_ZEROES = 1 << 1;
export const FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_C_NO_ZEROES = 1 << 1;

/** Transmission flags. */
export const TF = {
  HAS_FLAGS: 1 << 0,
  READ_ONLY: 1 << 1,
  SEND_FLUSH: 1 << 2,
  SEND_FUA: 1 << 3,
  ROTATIONAL: 1 << 4,
  SEND_TRIM: 1 << 5,
  SEND_WRITE_ZEROES: 1 << 6,
  SEND_DF: 1 << 7,
  CAN_MULTI_CONN: 1 << 8,
  SEND_RESIZE: 1 << 9,
  SEND_CACHE: 1 << 10,
  SEND_FAST_ZERO: 1 << 11,
} as const;

/** Options. */
export const OPT = {
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  STARTTLS: 5,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
} as const;

/** Option reply types. */
export const REP = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: 0x80000001,
  ERR_POLICY: 0x80000002,
  ERR_INVALID: 0x80000003,
  ERR_PLATFORM: 0x80000004,
  ERR_TLS_REQD: 0x80000005,
  ERR_UNKNOWN: 0x80000006,
  ERR_SHUTDOWN: 0x80000007,
  ERR_BLOCK_SIZE_REQD: 0x80000008,
  ERR_TOO_BIG: 0x80000009,
} as const;

/** NBD_INFO types. */
export const INFO = { EXPORT: 0, NAME: 1, DESCRIPTION: 2, BLOCK_SIZE: 3 } as const;

/** Commands. */
export const CMD = {
  READ: 0,
  WRITE: 1,
  DISC: 2,
  FLUSH: 3,
  TRIM: 4,
  CACHE: 5,
  WRITE_ZEROES: 6,
  BLOCK_STATUS: 7,
} as const;

/** Command flags. */
export const CMD_FLAG = {
  FUA: 1 << 0,
  NO_HOLE: 1 << 1,
  DF: 1 << 2,
  REQ_ONE: 1 << 3,
  FAST_ZERO: 1 << 4,
} as const;

/** Structured reply flags and types. */
export const REPLY_FLAG_DONE = 1 << 0;
export const REPLY_TYPE = {
  NONE: 0,
  OFFSET_DATA: 1,
  OFFSET_HOLE: 2,
  BLOCK_STATUS: 5,
  ERROR: 0x8001,
  ERROR_OFFSET: 0x8002,
} as const;

/** Error values (errno-like, as the protocol fixes them). */
export const ERR = {
  EPERM: 1,
  EIO: 5,
  ENOMEM: 12,
  EINVAL: 22,
  ENOSPC: 28,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ESHUTDOWN: 108,
} as const;

/** `base:allocation` status flags. */
export const STATE_HOLE = 1 << 0;
export const STATE_ZERO = 1 << 1;

/** TLS-PSK cipher suites of the export (TLS 1.2), for the server and the client alike. */
export const PSK_CIPHERS = 'ECDHE-PSK-AES256-CBC-SHA384:DHE-PSK-AES256-GCM-SHA384:PSK-AES256-GCM-SHA384:PSK-AES128-GCM-SHA256';

/** The one metadata context Basalt serves. */
export const BASE_ALLOCATION = 'base:allocation';

/** Block size constraints advertised with NBD_INFO_BLOCK_SIZE. */
export const MIN_BLOCK = 1;
export const PREFERRED_BLOCK = 4096;
/** Largest read/write payload accepted (32 MiB, as common servers use). */
export const MAX_PAYLOAD = 32 * 1024 * 1024;
/** Longest option the server reads; longer ones are refused (an export name is at most 4096 bytes). */
export const MAX_OPTION_LENGTH = 64 * 1024;

/** System error codes (Node's `code` of an errno error) and the NBD error each maps to; anything else is EIO. */
const ERRNO_TO_NBD: ReadonlyMap<string, number> = new Map([
  ['EPERM', ERR.EPERM], ['EROFS', ERR.EPERM],
  ['ENOMEM', ERR.ENOMEM],
  ['EINVAL', ERR.EINVAL], ['INVALID_INPUT', ERR.EINVAL],
  ['ENOSPC', ERR.ENOSPC], ['EDQUOT', ERR.ENOSPC], ['EFBIG', ERR.ENOSPC],
  ['EOVERFLOW', ERR.EOVERFLOW],
  ['ENOTSUP', ERR.ENOTSUP], ['EOPNOTSUPP', ERR.ENOTSUP],
]);

/**
 * The NBD error a failed command answers: the first known code along the
 * error's `cause` chain (a driver's errno under the guard's `DriverError`),
 * else EIO. The same table as the native data plane's `nbd_error`
 * (`native/nbd_dataplane.c`), so both planes answer alike: a client such as
 * QEMU pauses its guest on ENOSPC but passes EIO through as a disk error.
 */
export function nbdErrorOf(err: unknown): number {
  for (let e = err, depth = 0; e !== null && typeof e === 'object' && depth < 8; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    const mapped = typeof code === 'string' ? ERRNO_TO_NBD.get(code) : undefined;
    if (mapped !== undefined) return mapped;
  }
  return ERR.EIO;
}
