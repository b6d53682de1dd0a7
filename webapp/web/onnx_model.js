// webapp/inference/onnx_model.py's twin: the metadata's format, a session's logits, and the step
// interface on the model file (PlainSteps).

/** The metadata's chargpt format that this code reads (webapp/inference/onnx_model.py's FORMAT_VERSION). */
export const FORMAT_VERSION = "2";

/** (layers, heads, head size, logit columns) as a session's graph declares them (graph_sizes in Python). */
export function graphSizes(session) {
  const past = session.inputMetadata.filter((i) => i.name !== "input_ids");
  const logits = session.outputMetadata.find((o) => o.name === "logits");
  return [past.length / 2, past[0].shape[1], past[0].shape[3], logits.shape[2]];
}

/** Logits [B, T, columns] as a session returns them (the model file's last column is the
 * end-of-text id, never sampled), read from position `first` on: `row(r, j)` is row r's logits
 * over the vocabulary at position first + j, for j below `width`. */
export class Logits {
  constructor({ data, dims }, vocabSize, first = 0) {
    [this.data, this.dims, this.vocabSize, this.first] = [data, dims, vocabSize, first];
    this.width = dims[1] - first;
  }

  row(r, j) {
    const [, length, columns] = this.dims;
    const at = (r * length + this.first + j) * columns;
    return this.data.subarray(at, at + this.vocabSize);
  }
}

/** The step interface on the model file (webapp/inference/onnx_model.py's PlainSteps, which says
 * what each method does): one character a row a step, the cache fed back as the next past. */
export class PlainSteps {
  constructor(model) {
    this.model = model;
    this.maxBlock = 1;
  }

  async prefill(rows) {
    const result = await this.model.forward(rows);
    return { logits: new Logits(result, this.model.vocab.length, rows[0].length - 1), state: result.past };
  }

  async forward(rows, state) {
    const result = await this.model.forward(rows, state);
    return { logits: new Logits(result, this.model.vocab.length), uncommitted: result.past };
  }

  commit(state, uncommitted) {
    return uncommitted;
  }
}
