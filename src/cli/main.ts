/**
 * The `basalt` command: `server`, `db migrate|status`, `config show`, `backup verify`
 * (the operator's, on this machine), and the API's clients: `volume`, `snapshot`,
 * `backup`, `attachment`, `type`, `service` (client-commands.ts), `attach`, `detach`, `openapi`.
 */
import os from 'node:os';
import { Presets, SingleBar } from 'cli-progress';
import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { attachLoop, detachLoop, loopDevicesOf, refreshLoop } from '../privileged/index.ts';
import { connect } from './api-client.ts';
import { addClientCommands, volumeId, withClient, type ClientFlags } from './client-commands.ts';
import { CliError, describeError, EXIT, exitCodeOf } from './exit-codes.ts';
import { waitForBackup } from './backup-wait.ts';
import { describeConfig, loadConfig, type BasaltConfig } from '../config/index.ts';
import { BasaltError } from '../errors/index.ts';
// The server, the database and the backup code load only for the commands that use them:
// a client command (`basalt volume list`) starts in a fraction of the time.
import { ROLES, type Role } from '../server/roles.ts';
import { serverLogger, type LogFormat } from '../server/log-destination.ts';
import { BASALT_VERSION } from '../server/version.ts';
import { rbdUrl, type RbdConnectionData } from './rbd-url.ts';

interface CommonFlags { config?: string; port?: number; stateDir?: string }

function port(value: string): number {
  if (!/^\d+$/.test(value) || Number(value) > 65535) throw new InvalidArgumentError('expected a port number 0-65535');
  return Number(value);
}

function logFormat(value: string): LogFormat {
  if (value !== 'json' && value !== 'pretty') throw new InvalidArgumentError('expected json or pretty');
  return value;
}

function withCommon(cmd: Command): Command {
  return cmd
    .option('--config <file>', 'INI configuration file (default: none, or $BASALT_CONFIG)')
    .option('--port <port>', 'API port (overrides BASALT_PORT and the file)', port)
    .option('--state-dir <dir>', 'state directory (overrides BASALT_STATE_DIR and the file)');
}

function configFrom(flags: CommonFlags): BasaltConfig {
  return loadConfig({ configFile: flags.config ?? process.env.BASALT_CONFIG, flags: { port: flags.port, stateDir: flags.stateDir } });
}

/** Whether commander has printed an error itself (a usage error), so it is not said twice. */
let commanderSaid = false;
const program = new Command('basalt').version(BASALT_VERSION).description('Basalt block storage service')
  // Usage errors end with their own exit code (exit-codes.ts), not commander's 1; inherited by every subcommand.
  .exitOverride()
  .configureOutput({ writeErr: (text) => { commanderSaid = true; process.stderr.write(text); } });

withCommon(program.command('server'))
  .description('run the service (all roles by default)')
  .option('--roles <roles>', `comma-separated roles to run: ${ROLES.join(', ')}`)
  .option('--log-format <format>', 'json, or pretty (one readable line per event); default log_format ($BASALT_LOG_FORMAT), else pretty on a terminal and json otherwise', logFormat)
  .action(async (flags: CommonFlags & { roles?: string; logFormat?: LogFormat }) => {
    const config = configFrom(flags);
    const format = flags.logFormat ?? (config.DEFAULT.log_format ? logFormat(config.DEFAULT.log_format) : process.stdout.isTTY ? 'pretty' : 'json');
    const logger = serverLogger(config.DEFAULT.log_level, format);
    for (const note of config.notes) logger.warn(`configuration: ${note}`);
    let roles: Role[] | undefined;
    if (flags.roles) {
      roles = flags.roles.split(',').map((r) => r.trim()) as Role[];
      const bad = roles.find((r) => !ROLES.includes(r));
      if (bad) throw new InvalidArgumentError(`unknown role ${bad}`);
    }
    const { startServer } = await import('../server/basalt-server.ts');
    const server = await startServer({ config, roles, logger }).catch((err: unknown) => {
      throw listenRefusal(err) ?? err;
    });
    let stopping = false;
    const stop = (signal: string): void => {
      if (stopping) return;
      stopping = true;
      process.stderr.write(`basalt: ${signal}, stopping\n`);
      const limit = config.DEFAULT.graceful_shutdown_timeout;
      if (limit > 0) {
        setTimeout(() => {
          process.stderr.write(`basalt: not stopped within graceful_shutdown_timeout (${limit} s): exiting with what is still running left to its job's lease\n`);
          process.exit(1);
        }, limit * 1000).unref();
      }
      server.close().then(() => process.exit(0), () => process.exit(1));
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
  });

/** A port that cannot be listened on, said in one line naming the option that moves it; undefined for any other error. */
function listenRefusal(err: unknown): CliError | undefined {
  const e = err as NodeJS.ErrnoException & { address?: string; port?: number };
  if (e?.syscall !== 'listen' || (e.code !== 'EADDRINUSE' && e.code !== 'EACCES' && e.code !== 'EADDRNOTAVAIL')) return undefined;
  const where = e.port === undefined ? e.address : `${e.address}:${e.port}`;
  const why = e.code === 'EADDRINUSE' ? 'another process is listening there' : e.code === 'EACCES' ? 'not allowed to use that port' : 'no interface of this host has that address';
  return new CliError(`cannot listen on ${where}: ${why}. Choose another with --port or BASALT_PORT (the API), or nbd_port / BASALT_NBD_PORT (the NBD export); nothing was left running`, EXIT.failed);
}

const db = program.command('db').description('database schema management');
withCommon(db.command('migrate')).description('apply pending migrations').action(async (flags: CommonFlags) => {
  const config = configFrom(flags);
  const { migrateToLatest, openDatabase, startRefusal } = await import('../db/index.ts');
  try {
    const handle = openDatabase(config.database.connection);
    try {
      const applied = await migrateToLatest(handle);
      console.log(applied.length ? `applied: ${applied.join(', ')}` : 'database is up to date');
    } finally {
      await handle.close();
    }
  } catch (err) {
    // A full (or failing) disk is said in one line naming the directory.
    throw startRefusal(err, config.database.connection) ?? err;
  }
});
withCommon(db.command('status')).description('list migrations and whether each is applied').action(async (flags: CommonFlags) => {
  const config = configFrom(flags);
  const { migrationStatus, openDatabase } = await import('../db/index.ts');
  const handle = openDatabase(config.database.connection);
  try {
    for (const m of await migrationStatus(handle)) console.log(`${m.applied ? 'applied' : 'pending'}  ${m.name}`);
  } finally {
    await handle.close();
  }
});

const backup = program.command('backup').description('backups, as an operator on this machine (the servers\' configuration)');
withCommon(backup.command('verify <backup>'))
  .description('read every blob of a backup back from the backup target and check it; a damaged backup is set to error. Exit 0: whole; 1: damaged or missing. Progress on stderr')
  .action(async (id: string, flags: CommonFlags) => {
    const bar = process.stderr.isTTY ? new SingleBar({ format: 'verifying {bar} {percentage}% | {value}/{total} blobs', stream: process.stderr }, Presets.shades_classic) : undefined;
    let shown = -1;
    const { verifyBackup } = await import('./backup-verify.ts');
    const r = await verifyBackup(configFrom(flags), id, (done, total) => {
      if (bar) {
        if (shown < 0) bar.start(total, 0);
        shown = done;
        bar.update(done);
        return;
      }
      // Not a terminal: a line per tenth.
      const tenth = Math.floor((done * 10) / total);
      if (tenth > shown) process.stderr.write(`verifying backup ${id}: ${(shown = tenth) * 10}% (${done} of ${total} blobs)\n`);
    });
    bar?.stop();
    if (r.bad.length === 0) {
      console.log(`backup ${r.backupId} (volume ${r.volumeId}): all ${r.blobs} blobs read back and checked`);
      return;
    }
    console.log(`backup ${r.backupId} (volume ${r.volumeId}): ${r.bad.length} of ${r.blobs} blobs damaged or missing; the backup is now in error:`);
    for (const hash of r.bad) console.log(`  ${hash}`);
    process.exitCode = 1;
  });

withClient(backup.command('create <volume>'))
  .description('back a volume up (Cinder\'s POST /backups): prints the backup\'s id, or with --wait follows it to the end with its progress')
  .option('--name <name>', 'the backup\'s name')
  .option('--incremental', 'only what changed since the volume\'s latest backup', false)
  .option('--force', 'back up an in-use volume (from a temporary snapshot)', false)
  .option('--snapshot <id>', 'back up this snapshot of the volume')
  .option('--wait', 'wait until the backup is available (exit 1 if it fails)', false)
  .action(async (volume: string, flags: ClientFlags & { name?: string; incremental: boolean; force: boolean; snapshot?: string; wait: boolean }) => {
    const api = await connect(flags);
    const { backup } = await api.call('POST', '/backups', {
      backup: { volume_id: await volumeId(api, volume), incremental: flags.incremental, force: flags.force, ...(flags.name ? { name: flags.name } : {}), ...(flags.snapshot ? { snapshot_id: flags.snapshot } : {}) },
    });
    if (!flags.wait) return void console.log(backup.id);
    const done = await waitForBackup(api, backup.id, `backup ${backup.id}`);
    if (done.status !== 'available') throw new BasaltError('DRIVER_FAILED', `backup ${backup.id} failed: ${String(done.fail_reason ?? done.status)}`);
    console.log(backup.id);
  });
withClient(backup.command('restore <backup>'))
  .description('restore a backup (Cinder\'s POST /backups/{id}/restore) to a new volume or onto --volume: prints the volume\'s id, or with --wait follows the restore to the end with its progress')
  .option('--volume <id>', 'an available volume at least as large to restore onto (default: a new volume)')
  .option('--wait', 'wait until the restore is done (exit 1 if it fails)', false)
  .action(async (id: string, flags: ClientFlags & { volume?: string; wait: boolean }) => {
    const api = await connect(flags);
    const { restore } = await api.call('POST', `/backups/${id}/restore`, { restore: flags.volume ? { volume_id: flags.volume } : {} });
    if (flags.wait) {
      await waitForBackup(api, id, `restore of backup ${id}`);
      // The backup is available again either way: the volume says how the restore went.
      const { volume } = await api.call('GET', `/volumes/${restore.volume_id}`);
      if (volume.status !== 'available') throw new BasaltError('DRIVER_FAILED', `the restore of backup ${id} onto volume ${restore.volume_id} failed: the volume is ${volume.status}`);
    }
    console.log(restore.volume_id);
  });

const config = program.command('config').description('configuration');
withCommon(config.command('show')).description('print every effective option and where it came from').action((flags: CommonFlags) => {
  console.log(describeConfig(configFrom(flags)));
});

withClient(program.command('attach <volume>'))
  .description('attach a volume to this host: a loop device when the volume is a file here, an rbd: URL (for QEMU with librbd) on an rbd backend, else the NBD URI')
  .option('--mode <mode>', 'rw or ro', 'rw')
  .option('--host <name>', 'this host\'s name as the volume service knows it', os.hostname())
  .action(async (volume: string, flags: ClientFlags & { mode: string; host: string }) => {
    if (flags.mode !== 'rw' && flags.mode !== 'ro') throw new InvalidArgumentError('--mode must be rw or ro');
    const api = await connect(flags);
    const connector = { host: flags.host, ip: '127.0.0.1', initiator: null, mode: flags.mode };
    const { attachment } = await api.call('POST', '/attachments', { attachment: { volume_uuid: await volumeId(api, volume), connector, mode: flags.mode } });
    await api.call('POST', `/attachments/${attachment.id}/action`, { 'os-complete': null });
    const info = attachment.connection_info as { driver_volume_type: string; data: Record<string, any> }; // eslint-disable-line @typescript-eslint/no-explicit-any
    if (info.driver_volume_type === 'local') {
      console.log(await attachLoop(info.data.device_path));
    } else if (info.driver_volume_type === 'rbd') {
      // QEMU's rbd: URL; the key stays out of it (the keyring, if given, is in the connection info).
      console.log(rbdUrl(info.data as RbdConnectionData));
    } else {
      const d = info.data;
      console.log(d.tls?.required ? `nbds://${d.tls.psk_identity}@${d.host}:${d.port}/${d.export_name} (TLS-PSK key ${d.tls.psk_key})` : d.uri);
    }
  });

withClient(program.command('detach <volume>'))
  .description('detach a volume from this host: removes its loop device and deletes its local attachment (--all: every attachment of the volume)')
  .option('--all', 'also delete the volume\'s NBD attachments (other hosts\')', false)
  .action(async (volume: string, flags: ClientFlags & { all: boolean }) => {
    const api = await connect(flags);
    const { attachments } = await api.call('GET', `/attachments/detail?volume_id=${await volumeId(api, volume)}`);
    let detached = 0;
    // A reserved attachment has no connection info yet (null, as Cinder answers).
    for (const a of attachments as Array<{ id: string; connection_info: { driver_volume_type?: string; data?: { device_path?: string } } | null }>) {
      const local = a.connection_info?.driver_volume_type === 'local';
      if (!local && !flags.all) continue;
      if (local && a.connection_info?.data?.device_path) {
        for (const device of await loopDevicesOf(a.connection_info.data.device_path)) await detachLoop(device);
      }
      await api.call('DELETE', `/attachments/${a.id}`);
      console.log(`detached ${a.id}`);
      detached++;
    }
    // Doing nothing is said, never a silent success.
    if (detached > 0) return;
    if (attachments.length === 0) throw new CliError(`volume ${volume} has no attachments`, EXIT.notFound);
    throw new CliError(`volume ${volume} has no local attachment on this host; its ${attachments.length} other attachment(s) (NBD, other hosts) stay: --all deletes them too`, EXIT.notFound);
  });

withClient(program.command('resize <volume>'))
  .description('after an in-use extend: make this host\'s loop devices of a volume take its new size (losetup --set-capacity); prints each device and its size in bytes')
  .action(async (volume: string, flags: ClientFlags) => {
    const api = await connect(flags);
    const { attachments } = await api.call('GET', `/attachments/detail?volume_id=${await volumeId(api, volume)}`);
    let resized = 0;
    for (const a of attachments as Array<{ connection_info: { driver_volume_type?: string; data?: { device_path?: string } } | null }>) {
      if (a.connection_info?.driver_volume_type !== 'local' || !a.connection_info.data?.device_path) continue;
      for (const device of await loopDevicesOf(a.connection_info.data.device_path)) {
        console.log(`${device} ${await refreshLoop(device)}`);
        resized++;
      }
    }
    // An NBD client reconnects instead (docs/online-extend.md); doing nothing is said, never a silent success.
    if (resized === 0) throw new CliError(`volume ${volume} has no loop device on this host (an NBD client sees the new size when it connects again)`, EXIT.notFound);
  });

withClient(program.command('openapi'))
  .description('print the OpenAPI 3.1 document of the API (GET /openapi.json: every route, its parameters and request body schemas)')
  .action(async (flags: ClientFlags) => {
    const api = await connect(flags);
    console.log(JSON.stringify(await api.call('GET', '/openapi.json', undefined, { unversioned: true }), null, 2));
  });

addClientCommands(program);

program.parseAsync(process.argv).catch((err: unknown) => {
  const code = exitCodeOf(err);
  // commander has printed its own usage message (and help or the version exits 0).
  if (!(err instanceof CommanderError && (commanderSaid || code === EXIT.ok))) process.stderr.write(`basalt: ${describeError(err)}\n`);
  process.exit(code === EXIT.ok ? EXIT.ok : code);
});
