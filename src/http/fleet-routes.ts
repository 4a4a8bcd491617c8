import { Router } from 'express';
import { ServiceError } from '../errors.js';
import { liveWriter, type FleetView, type HeartbeatView } from '../versions/heartbeats.js';

/** The fleet as the heartbeats in the data dir show it, read on each request. */
export type FleetReader = () => Promise<FleetView>;

/**
 * `GET /replicas`: every server sharing this data dir, from its last heartbeat: which version it
 * serves and prepares, whether it is ready and still beating. Served by the writer and by every
 * replica alike, so a load balancer's backends can all be asked.
 */
export function fleetRoutes(fleet: FleetReader): Router {
  const router = Router();
  router.get('/replicas', async (_req, res) => {
    const { servers, ignored } = await fleet();
    res.json({
      writer: liveWriter(servers) ?? null,
      replicas: servers.filter((server) => server.role === 'replica'),
      ignored,
    });
  });
  return router;
}

/**
 * A replica's answer to every training route: 421, naming the writer that serves them (from its
 * heartbeat), so a client pointed at the wrong server learns where to go.
 */
export function replicaTrainingRefusal(fleet: FleetReader): Router {
  const router = Router();
  router.all(/^\/training(\/.*)?$/, async (_req, _res, next) => {
    const writer = liveWriter((await fleet()).servers);
    next(new ServiceError('misdirected', `this server is a read-only replica (--replica): the training routes are served by ${writerAddress(writer)}`));
  });
  return router;
}

function writerAddress(writer: HeartbeatView | undefined): string {
  if (!writer) return 'the writer of its data dir, which is not beating now';
  return `the writer at http://${writer.host}:${writer.port}`;
}
