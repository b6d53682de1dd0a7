// webapp/inference/ring.py's twin: the ring file's step interface (RingSteps) and its rotary
// tables and masks.
import { Logits } from "./onnx_model.js";

/** webapp/inference/ring.py's rotary_tables: cos and signed sin [N, D] at whole positions, the angles in
 * float64 (a JavaScript number) and rounded once. */
export function rotaryTables(positions, headDim, base) {
  const half = headDim / 2;
  const cos = new Float32Array(positions.length * headDim);
  const sin = new Float32Array(positions.length * headDim);
  positions.forEach((position, r) => {
    for (let i = 0; i < half; i++) {
      const angle = position * base ** (-(2 * i) / headDim);
      const [c, s] = [Math.cos(angle), Math.sin(angle)];
      cos[r * headDim + i] = cos[r * headDim + half + i] = c;
      sin[r * headDim + i] = -s;
      sin[r * headDim + half + i] = s;
    }
  });
  return { cos, sin };
}

/** webapp/inference/ring.py's RING_TOLERANCE and VERIFY_CHUNK (tests/test_web.py ties them): max |logit
 * difference| from the model file's steps, and the characters in every other step checked. */
export const RING_TOLERANCE = 1e-4;
export const VERIFY_CHUNK = 4;

/** webapp/inference/ring.py's ring_mask: the ring file's ring_mask [B, T, S + T] for T new characters a
 * row: each sees its row's filled slots (mask [B, S]: 0 or -Infinity) but the ones its window
 * has left, and the new characters up to itself. */
export function ringMask(mask, positions, T, S) {
  const out = new Float32Array(positions.length * T * (S + T));
  positions.forEach((position, b) => {
    for (let t = 0; t < T; t++) {
      const row = (b * T + t) * (S + T);
      out.set(mask.subarray(b * S, b * S + S), row);
      for (let m = 0; m < t; m++) out[row + ((position + m) % S)] = -Infinity;
      for (let u = t + 1; u < T; u++) out[row + S + u] = -Infinity;
    }
  });
  return out;
}

/** The step interface on the ring file (webapp/inference/ring.py's RingStep): up to maxBlock
 * characters a row a step, the state a ring of blockSize - 1 slots per layer. */
export class RingSteps {
  constructor(model, session) {
    this.model = model;
    this.session = session;
    this.maxBlock = model.blockSize - 1;
  }

  async prefill(rows) {
    const result = await this.model.forward(rows);
    const length = rows[0].length;
    return { logits: new Logits(result, this.model.vocab.length, length - 1), state: this.state(result.past, length) };
  }

  async forward(rows, state) {
    const uncommitted = await this.run(rows, state);
    return { logits: new Logits(uncommitted, this.model.vocab.length), uncommitted };
  }

  commit(state, uncommitted, count) {
    const { n_head: H, head_dim: D } = this.model.config;
    const S = this.maxBlock,
      L = uncommitted.dims[1];
    uncommitted.added.forEach((data, i) => {
      for (let bh = 0; bh < data.length / (L * D); bh++)
        for (let t = 0; t < count; t++)
          state.rings[i].set(
            data.subarray((bh * L + t) * D, (bh * L + t + 1) * D),
            (bh * S + ((state.positions[Math.floor(bh / H)] + t) % S)) * D,
          );
    });
    state.positions.forEach((position, b) => {
      for (let t = 0; t < count; t++) state.mask[b * S + ((position + t) % S)] = 0;
    });
    state.positions = state.positions.map((position) => position + count);
    return state;
  }

  /** RingStep.state: the ring after a prefill of `length` characters whose cache (the model
   * file's presents, keys not rotated) is `past`. */
  state(past, length) {
    const { n_head: H, head_dim: D, rope_base: base } = this.model.config;
    const S = this.maxBlock,
      half = D / 2;
    const [B, , kept] = past[this.model.pastNames[0]].dims;
    const positions = Array.from({ length: kept }, (_, j) => length - kept + j);
    const { cos, sin } = rotaryTables(positions, D, base);
    const f = Math.fround; // each product and sum rounded to float32, as numpy's float32 arithmetic is
    const rings = this.model.pastNames.map((name, n) => {
      const source = past[name].data;
      const ring = new Float32Array(B * H * S * D);
      for (let bh = 0; bh < B * H; bh++)
        positions.forEach((position, j) => {
          const from = (bh * kept + j) * D,
            to = (bh * S + (position % S)) * D;
          if (n % 2) return ring.set(source.subarray(from, from + D), to); // a value
          for (let i = 0; i < half; i++) {
            const [x1, x2, t] = [source[from + i], source[from + half + i], j * D + i];
            ring[to + i] = f(f(x1 * cos[t]) + f(x2 * sin[t]));
            ring[to + half + i] = f(f(x2 * cos[t + half]) + f(x1 * sin[t + half]));
          }
        });
      return ring;
    });
    const mask = new Float32Array(B * S).fill(-Infinity);
    for (let b = 0; b < B; b++) for (const position of positions) mask[b * S + (position % S)] = 0;
    return { rings, mask, positions: Array(B).fill(length) };
  }

  /** RingStep.forward's session run: {data, dims [B, T, columns]: the logits, added: per layer
   * and kind, the new keys and values [B, H, T, D]}; the state is untouched. */
  async run(rows, state) {
    const { n_head: H, head_dim: D, rope_base: base } = this.model.config;
    const S = this.maxBlock,
      B = rows.length,
      L = rows[0].length,
      Tensor = this.model.ort.Tensor;
    const { cos, sin } = rotaryTables(
      state.positions.flatMap((p) => Array.from({ length: L }, (_, t) => p + t)),
      D,
      base,
    );
    const feeds = {
      input_ids: new Tensor("int64", BigInt64Array.from(rows.flat(), BigInt), [B, L]),
      rotary_cos: new Tensor("float32", cos, [B, L, D]),
      rotary_sin: new Tensor("float32", sin, [B, L, D]),
      ring_mask: new Tensor("float32", ringMask(state.mask, state.positions, L, S), [B, L, S + L]),
    };
    this.model.pastNames.forEach(
      (n, i) => (feeds[n.replace("past_key_values", "ring")] = new Tensor("float32", state.rings[i], [B, H, S, D])),
    );
    const out = await this.session.run(feeds);
    return {
      data: out.logits.data,
      dims: out.logits.dims,
      added: this.model.pastNames.map((n) => out[n.replace("past_key_values", "new")].data),
    };
  }

  /** RingStep.verify: the largest |logit difference| between ring steps and the model file's, at
   * batch 2, after prefills that leave the ring part-filled and full; the steps take one
   * character and VERIFY_CHUNK characters in turn. */
  async verify(steps = 8) {
    const model = this.model;
    let worst = 0;
    for (const length of [5, model.blockSize + 12]) {
      const rows = [0, 1].map((b) =>
        Array.from({ length: length + steps }, (_, t) => (7 * t + 3 * b + 1) % model.vocab.length),
      );
      let want = await model.forward(rows.map((row) => row.slice(0, length)));
      const state = this.state(want.past, length);
      for (let t = length, n = 0; t < length + steps; n++) {
        const chunk = rows.map((row) => row.slice(t, t + (n % 2 ? VERIFY_CHUNK : 1)));
        want = await model.forward(chunk, want.past);
        const { logits: got, uncommitted } = await this.forward(chunk, state);
        this.commit(state, uncommitted, chunk[0].length);
        const expected = new Logits(want, model.vocab.length);
        for (let b = 0; b < chunk.length; b++)
          for (let j = 0; j < chunk[0].length; j++) {
            const [x, y] = [expected.row(b, j), got.row(b, j)];
            for (let v = 0; v < x.length; v++) worst = Math.max(worst, Math.abs(x[v] - y[v]));
          }
        t += chunk[0].length;
      }
    }
    return worst;
  }
}
