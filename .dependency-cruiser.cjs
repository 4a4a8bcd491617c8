/**
 * The rooms of src/ and the direction imports may take: each room imports only rooms below it
 * (docs/architecture.md draws them). Type-only imports count: an interface a lower room needs
 * lives in that room. Run by `npm test` (test/architecture.test.ts).
 */
const FOUNDATION = '^src/(errors|file-io|cpu-flags|project-files|log)\\.ts$|^src/threads/';
const below = {
  onnx: [FOUNDATION],
  corpus: [FOUNDATION],
  encoder: [FOUNDATION, '^src/onnx/'],
  training: [FOUNDATION, '^src/corpus/'],
  // Building an index encodes passages, through the encoder's interface only.
  index: [FOUNDATION, '^src/onnx/', '^src/corpus/', '^src/encoder/embedding-encoder\\.ts$'],
  engine: [FOUNDATION, '^src/(onnx|corpus|encoder|index)/'],
  versions: [FOUNDATION, '^src/(onnx|corpus|encoder|index|engine)/'],
  http: [FOUNDATION, '^src/(corpus|encoder|index|training|engine|versions)/'],
};

const roomRules = Object.entries(below).map(([room, allowed]) => ({
  name: `${room}-imports-downward`,
  comment: `src/${room}/ may import only ${allowed.join(', ')} and itself`,
  severity: 'error',
  from: { path: `^src/${room}/` },
  to: { path: '^src/', pathNot: [`^src/${room}/`, ...allowed] },
}));

module.exports = {
  forbidden: [
    {
      name: 'foundation-imports-foundation',
      comment: 'errors, file-io, cpu-flags, project-files, log and threads/ are the floor: they import nothing else of src/',
      severity: 'error',
      from: { path: FOUNDATION },
      to: { path: '^src/', pathNot: FOUNDATION },
    },
    ...roomRules,
    {
      name: 'workers-import-rooms',
      comment: 'worker entry points run a room\'s work in another thread or process; they never reach the program above the rooms',
      severity: 'error',
      from: { path: '^src/workers/' },
      to: { path: '^src/(cli|config|server|demo|data-dir-lock)\\.ts$|^src/(commands|http|versions)/' },
    },
    {
      name: 'no-circular',
      severity: 'error',
      from: { path: '^src/' },
      to: { circular: true },
    },
    {
      name: 'src-not-tests',
      comment: 'the service never imports its tests or benchmarks',
      severity: 'error',
      from: { path: '^src/' },
      to: { path: '^(test|benchmarks)/' },
    },
  ],
  options: {
    // TypeScript 7 has no compiler API for dependency-cruiser; swc parses the sources, type-only imports included.
    parser: 'swc',
    tsPreCompilationDeps: true,
    doNotFollow: { path: 'node_modules' },
  },
};
