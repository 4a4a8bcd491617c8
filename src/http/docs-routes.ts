import { createRequire } from 'node:module';
import path from 'node:path';
import { Router } from 'express';
import { servicePackage } from '../project-files.js';

/** Swagger UI's browser build, from the npm package: the page needs no network beyond this server. */
const SWAGGER_UI_DIR = path.dirname(createRequire(import.meta.url).resolve('swagger-ui-dist/package.json'));
/** The package's files the page uses; not its sample index.html, which points at the petstore demo. */
const SWAGGER_UI_FILES = new Set(['swagger-ui.css', 'swagger-ui-bundle.js', 'favicon-32x32.png']);

/**
 * The page and its start-up script are separate files: helmet's Content-Security-Policy
 * (`script-src 'self'`) refuses inline scripts. Swagger UI reads the same openapi.yaml the tests
 * check the service against; `validatorUrl: null` keeps it from sending the document to
 * validator.swagger.io.
 */
const DOCS_PAGE = `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>agentic-retriever API</title>
  <link rel="stylesheet" href="/docs/swagger-ui.css">
  <link rel="icon" href="/docs/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/swagger-ui-bundle.js"></script>
  <script src="/docs/start.js"></script>
</body>
</html>
`;

const DOCS_START = `window.ui = SwaggerUIBundle({
  url: '/openapi.yaml',
  dom_id: '#swagger-ui',
  deepLinking: true,
  validatorUrl: null,
});
`;

function homePage(name: string, version: string): string {
  const links = [
    ['/docs', 'interactive API documentation (try the routes from the browser)'],
    ['/openapi.yaml', 'the OpenAPI 3.1 document'],
    ['/info', 'the retriever serving now'],
    ['/ready', 'readiness and loading progress'],
    ['/metrics', 'Prometheus metrics'],
  ];
  return `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>${name} ${version}</title>
  <link rel="icon" href="/docs/favicon-32x32.png">
</head>
<body>
  <h1>${name} ${version}</h1>
  <p>A Search-R1 compatible retrieval server: <code>POST /retrieve</code>.</p>
  <ul>
${links.map(([href, what]) => `    <li><a href="${href}">${href}</a>: ${what}</li>`).join('\n')}
  </ul>
</body>
</html>
`;
}

/** `/`: where a person (HTML) or a program (JSON) finds the documentation; `/docs`: Swagger UI over openapi.yaml. */
export function docsRoutes(): Router {
  const router = Router();
  const { name, version } = servicePackage();
  const home = { service: { name, version }, docs: '/docs', openapi: '/openapi.yaml' };
  router.get('/', (_req, res) => {
    // JSON first: curl's `*/*` gets it; a browser asks for text/html by name.
    res.format({
      'application/json': () => res.json(home),
      'text/html': () => res.type('html').send(homePage(name, version)),
      default: () => res.json(home),
    });
  });
  router.get('/docs', (_req, res) => {
    res.type('html').send(DOCS_PAGE);
  });
  router.get('/docs/start.js', (_req, res) => {
    res.type('js').send(DOCS_START);
  });
  router.get('/docs/:file', (req, res, next) => {
    if (SWAGGER_UI_FILES.has(req.params.file)) res.sendFile(path.join(SWAGGER_UI_DIR, req.params.file));
    else next();
  });
  return router;
}
