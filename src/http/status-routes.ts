import { Router } from 'express';
import type { RetrievalService } from '../engine/types.js';
import { OPENAPI_PATH, servicePackage } from '../project-files.js';

/** Seconds a load balancer should wait before asking /ready again while the retriever loads. */
const READY_RETRY_AFTER_SECONDS = 5;

/**
 * Liveness, readiness and identity. `/health` touches nothing but the event loop, so it answers
 * while a large batch is in the workers; `/ready` is what a launcher should poll before training.
 */
export function statusRoutes(service: RetrievalService): Router {
  const router = Router();
  const pkg = servicePackage();
  router.get('/health', (_req, res) => {
    res.json({ status: 'ok' });
  });
  router.get('/ready', (_req, res) => {
    const readiness = service.readiness();
    if (!readiness.ready) res.setHeader('Retry-After', String(READY_RETRY_AFTER_SECONDS)).status(503);
    res.json(readiness);
  });
  router.get('/info', (_req, res) => {
    res.json({ service: pkg, ready: service.readiness().ready, retriever: service.info() ?? null });
  });
  router.get('/openapi.yaml', (_req, res) => {
    res.type('application/yaml').sendFile(OPENAPI_PATH);
  });
  return router;
}
