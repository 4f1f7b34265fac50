/** The catalogue memo (migration 0027) on PostgreSQL (its trigger is plpgsql): see test/unit/db/catalogue-memo-cases.ts. */
import { after } from 'node:test';
import { openDatabase } from '../../src/db/index.ts';
import { startPostgres } from '../helpers/postgres.ts';
import { catalogueMemoCases } from '../unit/db/catalogue-memo-cases.ts';

const postgres = await startPostgres();
after(() => postgres.stop());

catalogueMemoCases('postgresql', async () => openDatabase(await postgres.createDatabase()));
