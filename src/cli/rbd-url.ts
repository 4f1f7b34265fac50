/**
 * QEMU's `rbd:` URL of Cinder's rbd connection info: how a host with librbd
 * (qemu-img, qemu-io, QEMU's `-drive file=`) opens the volume it names.
 */

/** The part of rbd connection info's `data` a URL needs (Cinder's key names). */
export interface RbdConnectionData {
  /** `pool/image`. */
  name: string;
  /** Monitor addresses, with `ports` at the same places. */
  hosts: string[];
  ports: string[];
  /** The cephx user, without `client.`. */
  auth_username: string;
}

/** Escapes a value of an `rbd:` URL (QEMU splits it at `:` and `@`; `\` escapes). */
function esc(value: string): string {
  return value.replace(/[:\\@]/g, (c) => `\\${c}`);
}

/**
 * The `rbd:` URL of `data`: the image, the user and the monitors; `options`
 * (such as `keyring` or `conf`) are appended as given, escaped. The key is
 * never part of it unless a `keyring` path is passed.
 */
export function rbdUrl(data: RbdConnectionData, options: Record<string, string> = {}): string {
  const monHost = data.hosts.map((h, i) => `${h.includes(':') ? `[${h}]` : h}:${data.ports[i]}`).join(',');
  const extra = Object.entries(options).map(([k, v]) => `:${k}=${esc(v)}`).join('');
  return `rbd:${esc(data.name)}:id=${esc(data.auth_username)}:mon_host=${esc(monHost)}${extra}`;
}
