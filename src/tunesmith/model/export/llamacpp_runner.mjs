// Runs a GGUF file in llama.cpp (the prebuilt build npm's node-llama-cpp ships) for tunesmith's
// parity check. Called by llamacpp.py in a child process: argv[2] is a JSON request, argv[3] a
// folder for the answer. Nothing here decides pass or fail; it reports what llama.cpp computed.
//
// request: {runtime: folder holding node_modules, model: path.gguf,
//           texts: [string] to tokenize (special tokens parsed, nothing added),
//           sequences: [[token id]] to evaluate, logits wanted at every position,
//           generate: {prompts: [[token id]], tokens: n} for greedy decoding}
// answer:  answer.json {tokenized, generated, vocab, logits: [file name per sequence]},
//          and per sequence a little-endian float32 file of positions x vocab logits.
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const request = JSON.parse(readFileSync(process.argv[2], "utf8"));
const outDir = process.argv[3];
const entry = join(request.runtime, "node_modules", "node-llama-cpp", "dist", "index.js");
const { getLlama, LlamaLogLevel } = await import(pathToFileURL(entry).href);

// llama.cpp's own warnings and errors go to stderr: they say why a file was refused.
const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.warn, progressLogs: false,
  logger: (level, message) => process.stderr.write(message.endsWith("\n") ? message : `${message}\n`) });
const model = await llama.loadModel({ modelPath: request.model, gpuLayers: 0 });
const longest = Math.max(8, ...request.sequences.map((s) => s.length),
  ...request.generate.prompts.map((p) => p.length + request.generate.tokens));
const context = await model.createContext({ contextSize: Math.max(64, longest + 8), batchSize: 512,
  sequences: 1, threads: Number(process.env.TUNESMITH_LLAMACPP_THREADS || 2) });
const seq = context.getSequence();   // one sequence, emptied before each input: no state leaks between them

const answer = { tokenized: [], generated: [], logits: [], vocab: null };
for (const text of request.texts) {
  answer.tokenized.push(Array.from(model.tokenize(text, true)));   // true: special tokens are parsed
}

for (const [index, sequence] of request.sequences.entries()) {
  await seq.clearHistory();
  const input = sequence.map((token) => [token, { generateNext: { logits: true } }]);
  const results = await seq.controlledEvaluate(input);
  let width = null;
  const rows = [];
  for (const result of results) {
    const logits = result?.next?.logits;
    if (!logits) throw new Error("llama.cpp returned no logits for a position");
    if (width === null) width = Math.max(...logits.keys()) + 1;
    const row = new Float32Array(width);
    for (const [token, value] of logits) row[token] = value;
    rows.push(row);
  }
  answer.vocab = width;
  const flat = new Float32Array(rows.length * width);
  rows.forEach((row, i) => flat.set(row, i * width));
  const name = `logits-${index}.f32`;
  writeFileSync(join(outDir, name), Buffer.from(flat.buffer));
  answer.logits.push(name);
}

for (const prompt of request.generate.prompts) {
  await seq.clearHistory();
  const tokens = [];
  // temperature 0 is greedy decoding (llama.cpp's argmax sampler); no penalties. The end-of-turn
  // token is yielded too: the trained model's continuation ends with it.
  for await (const token of seq.evaluate(prompt, { temperature: 0, yieldEogToken: true })) {
    tokens.push(token);
    if (tokens.length >= request.generate.tokens || model.isEogToken(token)) break;
  }
  answer.generated.push(tokens);
}
writeFileSync(join(outDir, "answer.json"), JSON.stringify(answer));
await context.dispose();
await model.dispose();
await llama.dispose();
