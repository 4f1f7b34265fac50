/**
 * The `basalt` command: `server`, `db migrate|status`, `config show`.
 * Client subcommands (volume, snapshot, attach, …) arrive with later issues.
 */
import { Command, InvalidArgumentError } from 'commander';
import { describeConfig, loadConfig, type BasaltConfig } from '../config/index.ts';
import { migrateToLatest, migrationStatus, openDatabase } from '../db/index.ts';
import { BasaltError } from '../errors/index.ts';
import { ROLES, startServer, type Role } from '../server/index.ts';
import { BASALT_VERSION } from '../server/index.ts';

interface CommonFlags { config?: string; port?: number; stateDir?: string }

function port(value: string): number {
  if (!/^\d+$/.test(value) || Number(value) > 65535) throw new InvalidArgumentError('expected a port number 0-65535');
  return Number(value);
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

const program = new Command('basalt').version(BASALT_VERSION).description('Basalt block storage service');

withCommon(program.command('server'))
  .description('run the service (all roles by default)')
  .option('--roles <roles>', `comma-separated roles to run: ${ROLES.join(', ')}`)
  .action(async (flags: CommonFlags & { roles?: string }) => {
    const config = configFrom(flags);
    let roles: Role[] | undefined;
    if (flags.roles) {
      roles = flags.roles.split(',').map((r) => r.trim()) as Role[];
      const bad = roles.find((r) => !ROLES.includes(r));
      if (bad) throw new InvalidArgumentError(`unknown role ${bad}`);
    }
    const server = await startServer({ config, roles });
    let stopping = false;
    const stop = (signal: string): void => {
      if (stopping) return;
      stopping = true;
      process.stderr.write(`basalt: ${signal}, stopping\n`);
      server.close().then(() => process.exit(0), () => process.exit(1));
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
  });

const db = program.command('db').description('database schema management');
withCommon(db.command('migrate')).description('apply pending migrations').action(async (flags: CommonFlags) => {
  const config = configFrom(flags);
  const handle = openDatabase(config.database.connection);
  try {
    const applied = await migrateToLatest(handle);
    console.log(applied.length ? `applied: ${applied.join(', ')}` : 'database is up to date');
  } finally {
    await handle.close();
  }
});
withCommon(db.command('status')).description('list migrations and whether each is applied').action(async (flags: CommonFlags) => {
  const config = configFrom(flags);
  const handle = openDatabase(config.database.connection);
  try {
    for (const m of await migrationStatus(handle)) console.log(`${m.applied ? 'applied' : 'pending'}  ${m.name}`);
  } finally {
    await handle.close();
  }
});

const config = program.command('config').description('configuration');
withCommon(config.command('show')).description('print every effective option and where it came from').action((flags: CommonFlags) => {
  console.log(describeConfig(configFrom(flags)));
});

program.parseAsync(process.argv).catch((err: unknown) => {
  if (err instanceof BasaltError) {
    process.stderr.write(`basalt: ${err.message}\n`);
  } else {
    process.stderr.write(`basalt: ${(err as Error)?.stack ?? String(err)}\n`);
  }
  process.exit(1);
});
