import express, { type ErrorRequestHandler, type Request, type Router } from 'express';
import { ServiceError } from '../errors.js';
import { checkedName } from '../training/fields.js';
import {
  IdempotencyKeyReusedError,
  NoIndexYetError,
  RegistrationError,
  VersionBuildingError,
  type Registration,
  type VersionManager,
} from '../versions/version-manager.js';
import type { VersionRecord } from '../versions/version-registry.js';
import { authenticatedRouter, type BearerAuthOptions } from './auth.js';

export interface VersionRouterOptions extends BearerAuthOptions {
  versions: VersionManager;
}

/**
 * `/training/versions*` and `/training/jobs*`: register checkpoints, build their indexes in the
 * background, activate a version or roll back, delete one, behind the training routes' bearer token.
 */
export function versionRouter({ versions, ...auth }: VersionRouterOptions): Router {
  const router = authenticatedRouter(auth);
  const json = express.json({ limit: '64kb' });

  router.get('/training/versions', async (_req, res) => {
    const { active, previous, pending, versions: list } = versions.list();
    const replicas = (await versions.fleetView()).servers.filter((server) => server.role === 'replica');
    res.json({ active: active ?? null, previous: previous ?? null, pending: pending ?? null, replicas, versions: list.map(shown) });
  });

  router.post('/training/versions', json, async (req, res) => {
    const body = objectBody(req);
    const modelPath = stringField(body, 'model_path', true)!;
    const indexPath = stringField(body, 'index_path', false);
    const label = nameField(body, 'label');
    const faissType = stringField(body, 'faiss_type', false);
    const buildIndex = body.build_index;
    if (buildIndex !== undefined && typeof buildIndex !== 'boolean') {
      throw new ServiceError('bad_request', 'build_index must be a boolean', { field: 'build_index' });
    }
    // A client names the index it brings or asks for one to be built, never neither nor both.
    if ((indexPath === undefined) === !buildIndex) {
      throw new ServiceError('bad_request', 'give either index_path or build_index: true', { field: 'index_path' });
    }
    if (faissType !== undefined && indexPath !== undefined) {
      throw new ServiceError('bad_request', 'faiss_type is the type an index job builds: give it with build_index: true, not with index_path', { field: 'faiss_type' });
    }
    const idempotencyKey = req.get(IDEMPOTENCY_KEY);
    if (idempotencyKey !== undefined && (idempotencyKey === '' || idempotencyKey.length > 255)) {
      throw new ServiceError('bad_request', `${IDEMPOTENCY_KEY} must be 1 to 255 characters`, { field: IDEMPOTENCY_KEY });
    }
    const { outcome, ...registered } = await versions.register({
      modelPath,
      ...(indexPath !== undefined && { indexPath }),
      ...(label !== undefined && { label }),
      ...(faissType !== undefined && { faissType }),
      ...(idempotencyKey !== undefined && { idempotencyKey }),
    });
    res.status(REGISTRATION_STATUS[outcome]).json(showingVersion(registered));
  });

  // Before `/:id` routes, so `rollback` is never taken for a version id.
  router.post('/training/versions/rollback', async (_req, res) => {
    res.json(showingVersion(await versions.rollback()));
  });

  router.get('/training/versions/:id', (req, res) => {
    res.json(shown(versions.version(String(req.params.id))));
  });

  router.delete('/training/versions/:id', async (req, res) => {
    res.json(showingVersion(await versions.remove(String(req.params.id))));
  });

  router.post('/training/versions/:id/activate', async (req, res) => {
    res.json(showingVersion(await versions.activate(String(req.params.id))));
  });

  router.post('/training/versions/:id/build', json, async (req, res) => {
    // The body is optional: without one, the version's own type is built.
    const faissType = req.body === undefined ? undefined : stringField(objectBody(req), 'faiss_type', false);
    res.status(202).json(await versions.build(String(req.params.id), faissType));
  });

  router.get('/training/jobs', (_req, res) => {
    res.json({ jobs: versions.jobs() });
  });

  router.get('/training/jobs/:id', (req, res) => {
    res.json(versions.job(String(req.params.id)));
  });

  router.delete('/training/jobs/:id', async (req, res) => {
    res.json(await versions.cancelJob(String(req.params.id)));
  });

  router.use(((error, _req, _res, next) => next(inApiWords(error))) satisfies ErrorRequestHandler);

  return router;
}

/** A version as clients see it: without the fingerprint the service matches repeated registrations by; the reason a build stopped ends with the request that resumes it. */
function shown({ buildStopped, fingerprint: _matchedByTheService, ...version }: VersionRecord): VersionRecord {
  if (buildStopped === undefined) return version;
  const resumes = buildStopped === 'interrupted' ? 'resumes it from its partial file' : 'resumes it';
  return { ...version, reason: `${version.reason}; POST /training/versions/${version.id}/build ${resumes}` };
}

function showingVersion<T extends { version: VersionRecord }>(result: T): T {
  return { ...result, version: shown(result.version) };
}

const BODY_FIELDS: Record<RegistrationError['field'], string> = { modelPath: 'model_path', indexPath: 'index_path', faissType: 'faiss_type' };

const IDEMPOTENCY_KEY = 'Idempotency-Key';

/** 202: the checkpoint converts in the background, follow the version; 200: the earlier registration's version. */
const REGISTRATION_STATUS: Record<Registration['outcome'], number> = { new: 201, converting: 202, existing: 200 };

/** The versions room says what to do and what was wrong; a client hears it in the API's words: its routes and body fields. */
function inApiWords(error: unknown): unknown {
  if (error instanceof VersionBuildingError) {
    const { versionId, jobId } = error;
    return new ServiceError('conflict', `version ${versionId} is building its index; cancel job ${jobId} (DELETE /training/jobs/${jobId}) first`);
  }
  if (error instanceof NoIndexYetError) return new NoIndexYetError(shown(error.version));
  if (error instanceof IdempotencyKeyReusedError) {
    const { key, version, buildsIndex } = error;
    const made = buildsIndex ? `build_index: true, faiss_type ${version.faissType ?? 'Flat'}` : `index_path ${version.indexPath}`;
    return new ServiceError(
      'conflict',
      `${IDEMPOTENCY_KEY} ${JSON.stringify(key)} was already used with a different body: it registered version ${version.id} (model_path ${version.source}, ${made}${version.label === undefined ? '' : `, label ${JSON.stringify(version.label)}`}); send a new key for a new registration`,
      { field: IDEMPOTENCY_KEY },
    );
  }
  if (error instanceof RegistrationError) {
    const field = BODY_FIELDS[error.field];
    return new ServiceError(error.code, `${field}: ${error.problem}`, { field });
  }
  return error;
}

function objectBody(req: Request): Record<string, unknown> {
  const body: unknown = req.body;
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new ServiceError('bad_request', 'send a JSON object (Content-Type: application/json)', { field: 'body' });
  }
  return body as Record<string, unknown>;
}

/** An optional name: no control characters or lone surrogates (`checkedName`). */
function nameField(body: Record<string, unknown>, field: string): string | undefined {
  const value = stringField(body, field, false);
  return value === undefined ? undefined : checkedName(value, field);
}

function stringField(body: Record<string, unknown>, field: string, required: boolean): string | undefined {
  const value = body[field];
  if (value === undefined && !required) return undefined;
  if (typeof value !== 'string' || value === '') {
    throw new ServiceError('bad_request', `${field} must be a non-empty string`, { field });
  }
  return value;
}
