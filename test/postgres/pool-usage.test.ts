/** `pool_usage` (migration 0026) on PostgreSQL (its triggers are plpgsql): see test/unit/db/pool-usage-cases.ts. */
import { after } from 'node:test';
import { openDatabase } from '../../src/db/index.ts';
import { startPostgres } from '../helpers/postgres.ts';
import { poolUsageCases } from '../unit/db/pool-usage-cases.ts';

const postgres = await startPostgres();
after(() => postgres.stop());

poolUsageCases('postgresql', async () => openDatabase(await postgres.createDatabase()));
