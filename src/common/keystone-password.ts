/**
 * The body of Keystone v3's password login scoped to a project (`POST
 * /v3/auth/tokens`), with keystoneauth's option names: what Basalt's own
 * service user sends to validate tokens (`[keystone_authtoken]`) and to tell
 * Nova of events (`[nova]`).
 */

/** The options of a password login (keystoneauth's names). */
export interface PasswordLogin {
  readonly username: string;
  readonly password: string;
  readonly user_domain_name: string;
  readonly project_name: string;
  readonly project_domain_name: string;
}

/** The JSON body of the login request, as a string. */
export function passwordLoginBody(o: PasswordLogin): string {
  return JSON.stringify({
    auth: {
      identity: { methods: ['password'], password: { user: { name: o.username, domain: { name: o.user_domain_name }, password: o.password } } },
      scope: { project: { name: o.project_name, domain: { name: o.project_domain_name } } },
    },
  });
}
