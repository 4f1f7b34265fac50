/** Configuration: the typed option schema and its loader. */
export * from './schema.ts';
export { loadConfig, describeConfig, type LoadConfigInput } from './load.ts';
