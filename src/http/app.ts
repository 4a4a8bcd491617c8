import express, { type Express, type Router } from 'express';
import helmet from 'helmet';
import type { RetrievalService } from '../engine/types.js';
import type { Logger } from '../log.js';
import { documentRoutes } from './document-routes.js';
import { docsRoutes } from './docs-routes.js';
import { errorHandler, notFoundHandler } from './errors.js';
import { fleetRoutes, type FleetReader } from './fleet-routes.js';
import { ServiceMetrics } from './metrics.js';
import { observeRequests } from './request-log.js';
import { rerankRoutes } from './rerank-routes.js';
import { retrieveRoutes, type RerankerSlot, type RetrieveSettings } from './retrieve-routes.js';
import { statusRoutes } from './status-routes.js';

export interface AppOptions {
  service: RetrievalService;
  /** `serve`'s settings satisfy it. */
  config: RetrieveSettings;
  logger: Logger;
  /** A fresh per-app registry when absent. */
  metrics?: ServiceMetrics;
  /** Further route groups (the training routes), mounted after ours and before the 404 handler. */
  extraRouters?: Router[];
  /** The reranker of `--reranker_model`, once loaded. */
  reranker?: RerankerSlot;
  /** The heartbeats of the servers sharing the data dir, for `GET /replicas`; absent: a server alone, an empty fleet. */
  fleet?: FleetReader;
}

const ALONE: FleetReader = async () => ({ servers: [], ignored: [] });

export function createApp({ service, config, logger, metrics, extraRouters = [], reranker, fleet = ALONE }: AppOptions): Express {
  const appMetrics = metrics ?? new ServiceMetrics(service);
  const app = express();
  app.disable('x-powered-by');
  // Clients address us by IP and port; ETags on per-request search results only cost hashing.
  app.set('etag', false);
  // Plain HTTP on a cluster network: HSTS and upgrade-insecure-requests would point clients at an HTTPS port that does not exist.
  app.use(helmet({ strictTransportSecurity: false, contentSecurityPolicy: { directives: { upgradeInsecureRequests: null } } }));
  app.use(observeRequests(logger, appMetrics));
  app.use(statusRoutes(service));
  app.use(fleetRoutes(fleet));
  app.use(retrieveRoutes(service, config, appMetrics, reranker));
  app.use(rerankRoutes(config, reranker));
  app.use(documentRoutes(service, config));
  app.use(docsRoutes());
  app.get('/metrics', async (_req, res) => {
    res.type(appMetrics.registry.contentType).send(await appMetrics.registry.metrics());
  });
  for (const router of extraRouters) app.use(router);
  app.use(notFoundHandler);
  app.use(errorHandler(logger));
  return app;
}
