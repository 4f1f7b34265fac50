/** Who is making a request, as authentication established it. */
export interface Caller {
  readonly projectId: string;
  readonly userId: string;
  readonly roles: readonly string[];
  readonly isAdmin: boolean;
  /** `req-<uuid>`, echoed as `x-openstack-request-id` and kept on jobs and messages. */
  readonly requestId: string;
}
