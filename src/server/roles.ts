/** The roles a process can run (apart from the server, so that the CLI can name them without loading it). */
export const ROLES = ['api', 'scheduler', 'volume', 'backup'] as const;
export type Role = (typeof ROLES)[number];
