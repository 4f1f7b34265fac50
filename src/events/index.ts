/** Events delivered outside Basalt: the compute side's external events (Nova). */
export { NovaClient, VOLUME_EXTENDED_MICROVERSION, type ExternalEvent, type SendResult } from './nova-client.ts';
export { ComputeEvents, computeEventsKind, NOVA_SINK, type ComputeEventsDeps, type ComputeEventsKindDeps, type ComputeEventsPayload } from './compute-events.ts';
export { deliveryCounts, pruneDeliveries } from './delivery-history.ts';
export { DISPATCH_MS, EVENTS_TARGET, matchesPatterns, webhookDeliveryKind, Webhooks, webhookSignature, webhookSink, webhookView, type WebhookDeliveryPayload, type WebhooksDeps } from './webhooks.ts';
