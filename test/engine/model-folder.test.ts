import assert from 'node:assert/strict';
import { mkdir, rename, stat, utimes } from 'node:fs/promises';
import path from 'node:path';
import { readManifest } from '../../src/encoder/manifest.js';
import { resolveModelFolder } from '../../src/engine/model-folder.js';
import { isServiceError } from '../support/assert-service-error.js';
import { temporaryDir, writeCheckpoint } from '../support/version-fixtures.js';
import { buildRetrieverFiles, SAMPLE_CORPUS } from '../support/retriever-fixture.js';

describe('resolveModelFolder: --retriever_model may be our model folder or a Hugging Face checkpoint', function () {
  let modelDir: string;
  let dir: string;

  before(async function () {
    ({ modelDir } = await buildRetrieverFiles({ preset: 'tiny', seed: 7, corpus: SAMPLE_CORPUS }));
    dir = await temporaryDir('model-folder');
  });

  it('serves a folder with retriever.json as it is', async function () {
    assert.equal(await resolveModelFolder(modelDir, { cacheDir: path.join(dir, 'cache'), fp16: false }), modelDir);
  });

  it('converts a safetensors checkpoint once, reuses the conversion, and converts again when the weights change', async function () {
    const checkpoint = await writeCheckpoint(path.join(dir, 'checkpoint-500'), modelDir, 11);
    const cacheDir = path.join(dir, 'cache');
    const converted: string[] = [];
    const options = { cacheDir, fp16: true, onConvert: (_from: string, into: string) => converted.push(into) };

    const first = await resolveModelFolder(checkpoint, options);
    assert.equal(path.dirname(first), cacheDir);
    assert.match(path.basename(first), /^checkpoint-500-[0-9a-f]{12}$/);
    const manifest = await readManifest(first);
    assert.equal(manifest.provenance.source, 'checkpoint');
    assert.deepEqual(manifest.files, { fp32: 'model.onnx', fp16: 'model.fp16.onnx' });
    assert.equal(manifest.dimension, (await readManifest(modelDir)).dimension);

    assert.equal(await resolveModelFolder(checkpoint, options), first);
    assert.deepEqual(converted, [first]);

    const weights = path.join(checkpoint, 'model.safetensors');
    const later = new Date((await stat(weights)).mtimeMs + 60_000);
    await utimes(weights, later, later);
    const second = await resolveModelFolder(checkpoint, options);
    assert.notEqual(second, first);
    assert.deepEqual(converted, [first, second]);
  });

  it('adds model.int8.onnx to a conversion when asked, in a folder of its own per weight width, recording the bits', async function () {
    const checkpoint = await writeCheckpoint(path.join(dir, 'checkpoint-int8'), modelDir, 13);
    const cacheDir = path.join(dir, 'cache-int8');
    const plain = await resolveModelFolder(checkpoint, { cacheDir, fp16: false });
    const eight = await resolveModelFolder(checkpoint, { cacheDir, fp16: false, int8: 8 });
    const seven = await resolveModelFolder(checkpoint, { cacheDir, fp16: false, int8: 7 });
    assert.equal(new Set([plain, eight, seven]).size, 3);
    assert.deepEqual((await readManifest(plain)).files, { fp32: 'model.onnx' });
    assert.equal((await readManifest(plain)).int8, undefined);
    for (const [folder, bits] of [[eight, 8], [seven, 7]] as const) {
      const manifest = await readManifest(folder);
      assert.deepEqual(manifest.files, { fp32: 'model.onnx', int8: 'model.int8.onnx' });
      assert.deepEqual(manifest.int8, {
        weightBits: bits,
        weightRange: bits === 8 ? 127 : 63,
        scheme: 'symmetric int8 weights, one scale per output column; uint8 activations quantized per run by DynamicQuantizeLinear',
        reason: `set to ${bits} bits`,
      });
    }
    const auto = await resolveModelFolder(checkpoint, { cacheDir, fp16: false, int8: 'auto' });
    assert.ok([eight, seven].includes(auto), 'auto reuses the conversion of the width it chooses');
  });

  it('names what is missing for a folder that is neither', async function () {
    const empty = path.join(dir, 'empty');
    await mkdir(empty);
    await assert.rejects(
      resolveModelFolder(empty, { cacheDir: path.join(dir, 'cache'), fp16: false }),
      isServiceError('not_found', /neither a model folder \(retriever\.json\) nor a Hugging Face BERT checkpoint/),
    );
    const checkpoint = await writeCheckpoint(path.join(dir, 'no-weights'), modelDir, 12);
    await rename(path.join(checkpoint, 'model.safetensors'), path.join(checkpoint, 'model.bin'));
    await assert.rejects(
      resolveModelFolder(checkpoint, { cacheDir: path.join(dir, 'cache'), fp16: false }),
      isServiceError('not_found', /model\.safetensors/),
    );
  });
});
