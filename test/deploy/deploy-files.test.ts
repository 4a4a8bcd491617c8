import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { CORE_SCHEMA, load, loadAll, mergeTag } from 'js-yaml';
import request from 'supertest';
import { parseServeArgs, type ServiceConfig } from '../../src/config.js';
import { PROJECT_ROOT } from '../../src/project-files.js';
import { createHarness, type Harness } from '../support/app-harness.js';
import { dockerfileStages, imageConfig, type ImageConfig } from '../support/dockerfile-stages.js';
import { loadRealService, realFixture, type RealService } from '../support/real-service.js';

/**
 * The deployment files cannot run here (no Docker engine, no cluster, no Grafana), so what can be
 * checked is checked: each parses, what one names another has (services, volumes, ports, the
 * nginx file, Deployments behind Services, the claim), every command line is one `serve` accepts,
 * the probes' paths are answered by the real app, and every metric the dashboard reads is one
 * that app's /metrics exports.
 */
const DEPLOY = path.join(PROJECT_ROOT, 'deploy');
const COMPOSE_DIR = path.join(DEPLOY, 'compose');
const NGINX_CONF = path.join(DEPLOY, 'nginx', 'retriever.conf');
const RETRIEVERS = ['writer', 'replica-1', 'replica-2'];
/** Labels Prometheus adds to every scraped series; `le` is a histogram bucket's. */
const SCRAPE_LABELS = new Set(['instance', 'job', 'le']);

type Yaml = Record<string, any>;

/** Compose files use YAML merge keys (`<<: *anchor`), which js-yaml reads only when asked. */
function readYaml(file: string): Yaml {
  return load(readFileSync(file, 'utf8'), { schema: CORE_SCHEMA.withTags(mergeTag) }) as Yaml;
}

const stages = dockerfileStages(readFileSync(path.join(PROJECT_ROOT, 'Dockerfile'), 'utf8'));
const targets: Record<string, ImageConfig> = { cpu: imageConfig(stages, 'cpu'), cuda: imageConfig(stages, 'cuda') };

/** `serve`'s settings for a container: the image's environment and command, `args` replacing the command. */
function serveConfig(image: ImageConfig, args: string[] = image.cmd, env: Record<string, string> = {}): ServiceConfig {
  assert.deepEqual(image.entrypoint, ['node', 'dist/src/cli.js', 'serve']);
  return parseServeArgs(args, { ...image.env, ...env });
}

/** `${NAME:-default}` as Compose reads it with NAME unset. */
function composeDefault(value: string): string {
  return value.replace(/\$\{\w+:-([^}]*)\}/g, '$1');
}

/** The Dockerfile target a Compose image names by its tag, e.g. agentic-retriever:cpu → cpu. */
function targetOf(image: string): ImageConfig {
  const tag = composeDefault(image).split(':').at(-1)!;
  const config = targets[tag];
  assert.ok(config, `${image} names no Dockerfile target`);
  return config;
}

describe('Dockerfile targets', function () {
  it('cpu and cuda serve with flags serve accepts, on the device they are for, on the exposed port', function () {
    for (const [name, image] of Object.entries(targets)) {
      const config = serveConfig(image);
      assert.equal(config.device, name, `${name}'s CMD`);
      assert.equal(config.host, '0.0.0.0');
      assert.deepEqual(image.expose, [config.port]);
      assert.equal(config.dataDir, '/data');
      assert.ok(image.volumes.includes(config.dataDir), `${name}: the data dir is a volume`);
      assert.match(image.healthcheck.join(' '), new RegExp(`http://127\\.0\\.0\\.1:${config.port}/ready`));
    }
    assert.equal(targets.cpu.env.NVIDIA_VISIBLE_DEVICES, undefined);
    assert.equal(targets.cuda.env.NVIDIA_VISIBLE_DEVICES, 'all');
  });

  it('both targets are built on the one app stage (shared layers), the local base only by BASE', function () {
    const byName = new Map(stages.map((stage) => [stage.name, stage]));
    assert.equal(byName.get('cpu')?.from, 'app');
    assert.equal(byName.get('cuda')?.from, 'app');
    assert.equal(byName.get('app')?.from, 'system');
    assert.equal(byName.get('system')?.from, '${BASE}');
    const script = readFileSync(path.join(PROJECT_ROOT, 'scripts', 'image-check.sh'), 'utf8');
    assert.match(script, /--target cpu --build-arg BASE="\$base"/);
  });
});

describe('docker compose files', function () {
  const compose = readYaml(path.join(COMPOSE_DIR, 'docker-compose.yml'));
  const gpu = readYaml(path.join(COMPOSE_DIR, 'docker-compose.gpu.yml'));
  const services = compose.services as Record<string, Yaml>;

  it('has the writer, two replicas and nginx; every depends_on names one of them', function () {
    assert.deepEqual(Object.keys(services).sort(), ['nginx', ...RETRIEVERS].sort());
    for (const [name, service] of Object.entries(services)) {
      const dependencies = Array.isArray(service.depends_on) ? service.depends_on : Object.keys(service.depends_on ?? {});
      for (const dependency of dependencies) assert.ok(services[dependency], `${name} depends on ${dependency}`);
    }
    assert.deepEqual(Object.keys(gpu.services).sort(), [...RETRIEVERS].sort());
  });

  it('retrievers run their image target with its device, on one shared volume at the data dir', function () {
    for (const [file, variant, device] of [
      ['docker-compose.yml', {}, 'cpu'],
      ['docker-compose.gpu.yml', gpu.services, 'cuda'],
    ] as const) {
      for (const name of RETRIEVERS) {
        const service = { ...services[name], ...(variant as Record<string, Yaml>)[name] };
        const config = serveConfig(targetOf(service.image), service.command);
        assert.equal(config.device, device, `${file} ${name}`);
        assert.equal((config as Record<string, unknown>).replica, name !== 'writer', `${file} ${name}: --replica`);
        assert.ok(service.expose.includes(String(config.port)), `${file} ${name} exposes its port`);
        const mounts = (service.volumes as string[]).map((volume) => composeDefault(volume).split(':'));
        const data = mounts.find(([, target]) => target === config.dataDir);
        assert.deepEqual(data, ['retriever-data', config.dataDir], `${file} ${name} mounts the shared volume`);
      }
    }
    assert.ok('retriever-data' in compose.volumes);
  });

  it('GPU variant reserves one distinct GPU per retriever', function () {
    const gpus = RETRIEVERS.map((name) => {
      const [device, ...others] = gpu.services[name].deploy.resources.reservations.devices as Yaml[];
      assert.equal(others.length, 0);
      assert.deepEqual(device!.capabilities, ['gpu']);
      assert.equal(device!.driver, 'nvidia');
      return composeDefault(device!.device_ids[0] as string);
    });
    assert.deepEqual(gpus, ['0', '1', '2']);
  });

  it('nginx mounts deploy/nginx/retriever.conf as its main configuration', function () {
    const [source, target, mode] = (services.nginx!.volumes as string[])[0]!.split(':');
    assert.equal(path.resolve(COMPOSE_DIR, source!), NGINX_CONF);
    assert.equal(target, '/etc/nginx/nginx.conf');
    assert.equal(mode, 'ro');
  });

  it("nginx's upstream servers are the compose services on serve's port, and it listens on the published port", function () {
    const conf = readFileSync(NGINX_CONF, 'utf8').replace(/#.*$/gm, '');
    const servers = [...conf.matchAll(/^\s*server\s+([\w.-]+):(\d+)/gm)].map(([, host, port]) => [host, Number(port)]);
    assert.ok(servers.length >= 2, 'an upstream of the replicas');
    for (const [host, port] of servers) {
      const service = services[host as string];
      assert.ok(service, `upstream server ${host} is a compose service`);
      assert.equal(port, serveConfig(targetOf(service.image), service.command).port, `${host}'s port`);
    }
    const listens = [...conf.matchAll(/^\s*listen\s+(?:[\d.]+:)?(\d+)/gm)].map(([, port]) => port);
    const published = (services.nginx!.ports as string[]).map((mapping) => composeDefault(mapping).split(':').at(-1)!);
    assert.ok(published.length > 0 && published.every((port) => listens.includes(port)), `nginx listens on ${published}`);
  });
});

describe('Kubernetes manifests', function () {
  const kustomization = readYaml(path.join(DEPLOY, 'k8s', 'kustomization.yaml'));
  const files = kustomization.resources as string[];
  const objects = files.flatMap((file) => loadAll(readFileSync(path.join(DEPLOY, 'k8s', file), 'utf8')) as Yaml[]);
  const ofKind = (kind: string) => objects.filter((object) => object.kind === kind);
  const deployment = (component: string) =>
    ofKind('Deployment').find((object) => object.spec.template.metadata.labels['app.kubernetes.io/component'] === component)!;
  const container = (object: Yaml) => object.spec.template.spec.containers[0] as Yaml;
  const containerEnv = (object: Yaml) =>
    Object.fromEntries((container(object).env as Yaml[]).map(({ name, value }) => [name as string, value as string]));

  it('kustomization lists every manifest in the folder', function () {
    const manifests = readdirSync(path.join(DEPLOY, 'k8s')).filter((file) => file !== 'kustomization.yaml');
    assert.deepEqual([...files].sort(), manifests.sort());
  });

  it('one writer, replaced by stopping it first; replicas roll without losing a ready pod', function () {
    const writer = deployment('writer');
    assert.equal(writer.spec.replicas, 1);
    assert.deepEqual(writer.spec.strategy, { type: 'Recreate' });
    const replicas = deployment('replica');
    assert.equal(replicas.spec.replicas, 2);
    assert.equal(replicas.spec.strategy.rollingUpdate.maxUnavailable, 0);
  });

  it('containers run serve flags serve accepts, on the port they declare, with the data dir on the claim', function () {
    const [claim, ...otherClaims] = ofKind('PersistentVolumeClaim');
    assert.equal(otherClaims.length, 0);
    assert.ok(claim!.spec.accessModes.includes('ReadWriteMany'));
    for (const component of ['writer', 'replica']) {
      const object = deployment(component);
      const config = serveConfig(targets.cuda, container(object).args, containerEnv(object));
      assert.equal((config as Record<string, unknown>).replica, component === 'replica', `${component}: --replica`);
      assert.deepEqual(container(object).ports, [{ name: 'http', containerPort: config.port }]);
      const volume = (object.spec.template.spec.volumes as Yaml[]).find((entry) => entry.persistentVolumeClaim);
      assert.equal(volume!.persistentVolumeClaim.claimName, claim!.metadata.name);
      assert.deepEqual(container(object).volumeMounts, [{ name: volume!.name, mountPath: config.dataDir }]);
      assert.equal(object.spec.template.metadata.annotations['prometheus.io/port'], String(config.port));
    }
  });

  it('every Service selects exactly one Deployment and targets its named port', function () {
    for (const service of ofKind('Service')) {
      const selector = service.spec.selector as Record<string, string>;
      const selected = ofKind('Deployment').filter((object) =>
        Object.entries(selector).every(([key, value]) => object.spec.template.metadata.labels[key] === value),
      );
      assert.equal(selected.length, 1, `${service.metadata.name} selects one Deployment`);
      const ports = (container(selected[0]!).ports as Yaml[]).map((port) => port.name);
      for (const port of service.spec.ports as Yaml[]) assert.ok(ports.includes(port.targetPort));
    }
    assert.deepEqual(ofKind('Service').map((service) => service.metadata.name).sort(), ['retriever', 'retriever-writer']);
  });

  describe('against the real app', function () {
    let real: RealService;
    let harness: Harness;

    before(async function () {
      real = await loadRealService(await realFixture(), 'deploy-v1');
      // The engine itself, not the test wrapper: its batcher is what registers the queue and batch metrics.
      harness = createHarness(real.active);
    });

    after(async function () {
      await real?.close();
    });

    it('readiness probes /ready and liveness probes /health, both answered 200 by a loaded retriever', async function () {
      for (const component of ['writer', 'replica']) {
        const probes = container(deployment(component));
        assert.deepEqual(probes.readinessProbe.httpGet, { path: '/ready', port: 'http' });
        assert.deepEqual(probes.livenessProbe.httpGet, { path: '/health', port: 'http' });
      }
      assert.deepEqual((await request(harness.app).get('/ready').expect(200)).body.ready, true);
      assert.deepEqual((await request(harness.app).get('/health').expect(200)).body, { status: 'ok' });
    });

    it('the Grafana dashboard reads only metrics and labels /metrics exports', async function () {
      await request(harness.app).post('/retrieve').send({ queries: ['who wrote hamlet'], topk: 2 }).expect(200);
      await request(harness.app).post('/retrieve').send({ queries: [7] }).expect(400);
      const exposition = (await request(harness.app).get('/metrics').expect(200)).text;
      const exported = new Map<string, Set<string>>();
      for (const [, name, labels = ''] of exposition.matchAll(/^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? \S+$/gm)) {
        const known = exported.get(name!) ?? new Set<string>();
        for (const [, label] of labels.matchAll(/(\w+)="/g)) known.add(label!);
        exported.set(name!, known);
      }

      const dashboard = JSON.parse(readFileSync(path.join(DEPLOY, 'grafana', 'retriever.json'), 'utf8')) as Yaml;
      const queries = [
        ...(dashboard.panels as Yaml[]).flatMap((panel) => (panel.targets ?? []).map((target: Yaml) => target.expr as string)),
        ...(dashboard.templating.list as Yaml[]).flatMap((variable) => (variable.definition ? [variable.definition as string] : [])),
      ];
      const used = new Set<string>();
      for (const query of queries) {
        const inQuery = new Set<string>();
        for (const [, name, selector = ''] of query.matchAll(/\b(retriever_\w+)(?:\{([^}]*)\})?/g)) {
          used.add(name!);
          inQuery.add(name!);
          assert.ok(exported.has(name!), `${name} (in ${query}) is not exported`);
          for (const [, label] of selector.matchAll(/(\w+)\s*[=!]~?"/g)) {
            assert.ok(SCRAPE_LABELS.has(label!) || exported.get(name!)!.has(label!), `${name} has no label ${label}`);
          }
        }
        for (const [, labels] of query.matchAll(/\bby \(([^)]*)\)/g)) {
          for (const label of labels!.split(/,\s*/)) {
            const known = [...inQuery].some((name) => exported.get(name)!.has(label));
            assert.ok(SCRAPE_LABELS.has(label) || known, `grouping by ${label} in ${query}`);
          }
        }
      }
      // What the dashboard is for: rate, latency, queue, batches, 503s, the version each replica serves.
      for (const name of [
        'retriever_http_requests_total',
        'retriever_http_request_duration_seconds_bucket',
        'retriever_queue_queries',
        'retriever_batch_queries_sum',
        'retriever_overloaded_requests_total',
        'retriever_active_version',
      ]) {
        assert.ok(used.has(name), `the dashboard shows ${name}`);
      }
      assert.equal(exposition.match(/^retriever_active_version\{version="deploy-v1"\} 1$/m)?.length, 1);
    });
  });
});
