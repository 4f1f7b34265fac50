/**
 * The one place Basalt runs privileged host commands. A fixed list of
 * operations, each validating its arguments before it runs the tool with an
 * argument vector (never a shell line), so the rest of the service can stay
 * unprivileged and nothing else builds a command line.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { InvalidInputError } from '../errors/index.ts';

const run = promisify(execFile);

const VOLUME_FILE = /^volume-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const LOOP_DEVICE = /^\/dev\/loop[0-9]+$/;

/**
 * Attaches a file-backed volume as a loop device; returns the device path.
 * @throws InvalidInputError when `file` is not an absolute path to a volume file.
 */
export async function attachLoop(file: string): Promise<string> {
  if (!path.isAbsolute(file) || !VOLUME_FILE.test(path.basename(file)) || path.normalize(file) !== file) {
    throw new InvalidInputError(`Refusing to attach ${file}: not a volume file path`);
  }
  const { stdout } = await run('losetup', ['--find', '--show', '--direct-io=off', file]);
  const device = stdout.trim();
  if (!LOOP_DEVICE.test(device)) throw new InvalidInputError(`losetup answered an unexpected device "${device}"`);
  return device;
}

/** The loop devices backed by `file`. */
export async function loopDevicesOf(file: string): Promise<string[]> {
  if (!path.isAbsolute(file) || !VOLUME_FILE.test(path.basename(file))) throw new InvalidInputError(`Not a volume file path: ${file}`);
  const { stdout } = await run('losetup', ['--noheadings', '--output', 'NAME', '--associated', file]);
  return stdout.split('\n').map((l) => l.trim()).filter((l) => LOOP_DEVICE.test(l));
}

/**
 * Makes a loop device take its backing file's size again (`losetup
 * --set-capacity`): after an online extend the file is larger, but the
 * device keeps the size it was set up with until told. Returns the device's
 * size in bytes afterwards.
 * @throws InvalidInputError for anything but /dev/loopN.
 */
export async function refreshLoop(device: string): Promise<number> {
  if (!LOOP_DEVICE.test(device)) throw new InvalidInputError(`Refusing to resize ${device}: not a loop device`);
  await run('losetup', ['--set-capacity', device]);
  // The kernel's count of 512-byte sectors, whatever the device's logical block size.
  const sectors = await fs.readFile(`/sys/class/block/${path.basename(device)}/size`, 'utf8');
  return Number(sectors.trim()) * 512;
}

/**
 * Detaches a loop device.
 * @throws InvalidInputError for anything but /dev/loopN.
 */
export async function detachLoop(device: string): Promise<void> {
  if (!LOOP_DEVICE.test(device)) throw new InvalidInputError(`Refusing to detach ${device}: not a loop device`);
  await run('losetup', ['--detach', device]);
}
