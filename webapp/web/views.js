// How the model decides, drawn the same way on both pages (docs/views.md): what it considered at
// each generated character (an inspector: hover, tap, or Tab then Enter), the next character's
// distribution under the page's settings (a chart) and where every head looked as the model
// computed it (an attention view: a map per layer and head, each enlarged on a click).
//
// It only draws: the numbers come from the server on the Gradio page (the generated text's
// data-alternatives and data-request attributes, webapp/server/coloured.py; /inspect's answer,
// webapp/server/next_character.py) and from chargpt.js on the static page (app.js). A classic
// script, not a module, so that the Gradio page can load it inline (webapp/server/page.py): it
// sets globalThis.chargptViews.
(function (root) {
  "use strict";

  const ALTERNATIVES = 5; // the likeliest characters shown at each generated one (sampling.py's PAGE_ALTERNATIVES)
  const CHART_ROWS = 20; // the chart's likeliest characters; the others are "the rest"
  const DIGITS = 6; // a probability's decimals in the inspector: within 5e-7 of the engine's
  const CLOSE_AFTER_MS = 300; // a hovered character's panel stays this long after the pointer leaves
  const STYLE_ID = "chargpt-views-style";
  const CSS = `
.chargpt-popover { position: absolute; z-index: 1000; box-sizing: border-box; width: min(25rem, calc(100vw - 16px));
  background: #fff; color: #222; border: 1px solid #bbb; border-radius: 8px; box-shadow: 0 6px 24px rgba(0,0,0,.18);
  padding: .6rem .7rem; font: 14px/1.4 system-ui, sans-serif; }
.chargpt-popover[hidden] { display: none; }
.chargpt-popover h3 { margin: 0 0 .2rem; font-size: 1rem; }
.chargpt-popover p { margin: 0 0 .4rem; color: #555; font-size: .85rem; }
.chargpt-popover table { width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums; }
.chargpt-popover th { text-align: left; font-weight: 600; font-size: .8rem; color: #555; padding: .1rem .25rem; }
.chargpt-popover td { padding: .15rem .25rem; border-top: 1px solid #eee; vertical-align: middle; }
.chargpt-popover td.chargpt-char { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 1rem; }
.chargpt-popover tr.chargpt-drawn td { background: #eef6ee; font-weight: 600; }
.chargpt-popover tr.chargpt-removed td { color: #888; }
.chargpt-popover button { font: inherit; font-size: .8rem; padding: .1rem .45rem; cursor: pointer; white-space: nowrap; }
.chargpt-popover .chargpt-tag { font-size: .75rem; color: #555; }
.chargpt-popover .chargpt-close { float: right; }
.chargpt-open { outline: 2px solid #1f6feb; outline-offset: 1px; }
[data-alternatives]:focus-visible, [data-i]:focus-visible { outline: 2px solid #1f6feb; outline-offset: 1px; }
.chargpt-chosen { text-decoration: underline wavy #1f6feb; }
.chargpt-undo { font: inherit; font-size: .85rem; margin: 0 0 .4rem; cursor: pointer; }
.chargpt-chart { font: 13px/1.3 system-ui, sans-serif; }
.chargpt-chart p { margin: 0 0 .35rem; }
.chargpt-chart .chargpt-line { color: #666; font-size: .8rem; }
.chargpt-chart ol { list-style: none; margin: 0; padding: 0; }
.chargpt-chart li { display: grid; grid-template-columns: 2.2em 1fr auto; align-items: center; gap: .4em; margin: 1px 0; }
.chargpt-chart .chargpt-char { font-family: ui-monospace, Menlo, Consolas, monospace; text-align: center; }
.chargpt-chart .chargpt-track { position: relative; height: 1.05em; background: rgba(127,127,127,.12); border-radius: 3px; }
.chargpt-chart .chargpt-model { position: absolute; left: 0; top: 0; height: 30%; background: #888; border-radius: 3px; }
.chargpt-chart .chargpt-draw { position: absolute; left: 0; bottom: 0; height: 70%; background: #3b82c4; border-radius: 3px; }
.chargpt-chart li.chargpt-removed .chargpt-char,
.chargpt-chart li.chargpt-removed .chargpt-number { color: #999; text-decoration: line-through; }
.chargpt-chart .chargpt-number { font-variant-numeric: tabular-nums; text-align: right; font-size: .75rem; white-space: nowrap; }
.chargpt-chart .chargpt-rest .chargpt-char { font-family: inherit; font-size: .75rem; }
.chargpt-attention { font: 13px/1.3 system-ui, sans-serif; }
.chargpt-attention p { margin: 0 0 .35rem; }
.chargpt-attention .chargpt-line { color: #666; font-size: .8rem; }
.chargpt-heads { display: grid; grid-template-columns: auto repeat(var(--heads), minmax(0, 1fr)); gap: 3px; align-items: stretch; }
.chargpt-heads .chargpt-label { font-size: .7rem; color: #555; align-self: center; text-align: center; white-space: nowrap; }
.chargpt-attention button.chargpt-head { display: block; min-width: 0; padding: 2px; margin: 0; border: 1px solid #ccc;
  border-radius: 4px; background: #fff; box-shadow: none; cursor: pointer; text-align: left; color: #333;
  font: 400 6px/1.15 ui-monospace, Menlo, Consolas, monospace; white-space: pre-wrap; word-break: break-all; overflow: hidden; }
.chargpt-attention button.chargpt-head[aria-pressed="true"] { border-color: #1f6feb; box-shadow: 0 0 0 2px #1f6feb; }
.chargpt-attention button.chargpt-head:focus-visible { outline: 2px solid #1f6feb; outline-offset: 1px; }
@media (min-width: 700px) { .chargpt-attention button.chargpt-head { font-size: 8px; } }
.chargpt-enlarged { margin-top: .5rem; border: 1px solid #bbb; border-radius: 8px; padding: .5rem .6rem; }
.chargpt-enlarged[hidden] { display: none; }
.chargpt-enlarged h4 { margin: 0 0 .3rem; font-size: .95rem; }
.chargpt-enlarged .chargpt-heat { font: 16px/1.6 ui-monospace, Menlo, Consolas, monospace; white-space: pre-wrap; word-break: break-all; }
.chargpt-enlarged .chargpt-close { float: right; font: inherit; cursor: pointer; }
.chargpt-self { outline: 1px solid #333; }
`;

  function addStyle() {
    if (typeof document === "undefined" || document.getElementById(STYLE_ID)) return;
    const style = document.createElement("style");
    style.id = STYLE_ID;
    style.textContent = CSS;
    document.head.append(style);
  }

  const VISIBLE = { " ": "␣", "\n": "⏎", "\t": "⇥", "\r": "␍", "\u00a0": "⍽" };
  const NAMES = { " ": "space", "\n": "newline", "\t": "tab", "\r": "carriage return", "\u00a0": "no-break space" };

  /** A character as the views show it: whitespace and control characters made visible. */
  function visible(ch) {
    if (ch in VISIBLE) return VISIBLE[ch];
    const code = ch.codePointAt(0);
    if (code < 32) return String.fromCodePoint(0x2400 + code);
    return code === 127 ? "␡" : ch;
  }

  /** A character for a screen reader. */
  function spoken(ch) {
    return NAMES[ch] ?? `“${ch}”`;
  }

  /** An element with properties and children (text or elements; text is never parsed as HTML). */
  function el(tag, properties = {}, ...children) {
    const element = document.createElement(tag);
    for (const [key, value] of Object.entries(properties)) {
      if (key === "dataset") Object.assign(element.dataset, value);
      else if (key in element && key !== "list") element[key] = value;
      else element.setAttribute(key, value);
    }
    element.append(...children);
    return element;
  }

  const decimal = (p) => p.toFixed(DIGITS);

  /** The inspector's panel for one generated character. info: {position (from 0), drawn (its
   * character), chosen (the visitor chose it), greedy (temperature 0), rows: [{char, model,
   * sampled}]: the ALTERNATIVES likeliest, most likely first, then the drawn one when it is not
   * among them}. choose(char) rewrites the text from here; close() closes the panel. */
  function panel(info, choose, close) {
    const body = el("tbody");
    info.rows.forEach((row, i) => {
      const drawn = row.char === info.drawn;
      const removed = row.sampled === 0;
      const last = i === ALTERNATIVES;
      const note = drawn
        ? el("span", { className: "chargpt-tag" }, info.chosen ? "your choice" : "drawn")
        : el(
            "button",
            {
              type: "button",
              title: `Rewrite the text from here with ${spoken(row.char)}`,
              onclick: () => choose(row.char),
            },
            "Write this",
          );
      const tr = el(
        "tr",
        {
          className: [drawn && "chargpt-drawn", removed && "chargpt-removed"].filter(Boolean).join(" "),
          dataset: { char: row.char, model: String(row.model), sampled: String(row.sampled) },
        },
        el("td", { className: "chargpt-char", title: NAMES[row.char] ?? row.char }, visible(row.char)),
        el("td", {}, decimal(row.model)),
        el(
          "td",
          {},
          decimal(row.sampled),
          removed ? el("span", { className: "chargpt-tag" }, info.greedy ? " not taken" : " removed") : "",
        ),
        el("td", {}, note),
      );
      if (last)
        body.append(
          el("tr", {}, el("td", { colSpan: 4, className: "chargpt-tag" }, `Not among the ${ALTERNATIVES} likeliest:`)),
        );
      body.append(tr);
    });
    const how = info.greedy
      ? "At temperature 0 the likeliest is always taken."
      : "“In the draw”: its chance after temperature and the filters (0: removed by them).";
    return el(
      "div",
      {},
      el("button", { type: "button", className: "chargpt-close", title: "Close (Esc)", onclick: close }, "×"),
      el("h3", {}, `Character ${info.position + 1}: ${visible(info.drawn)}`, info.chosen ? " (your choice)" : ""),
      el(
        "p",
        {},
        `What the model considered here: its likeliest characters and their probabilities. ${how} ` +
          "Choose one to rewrite the text from here.",
      ),
      el(
        "table",
        {},
        el(
          "thead",
          {},
          el("tr", {}, el("th", {}, "char"), el("th", {}, "model"), el("th", {}, "in the draw"), el("th", {}, "")),
        ),
        body,
      ),
    );
  }

  /** Makes the generated characters (those matching `selector`) inside `text` inspectable: hover,
   * tap or click opens a character's panel, Tab reaches them (arrow keys, Home and End move
   * between them) and Enter or Space opens one, Esc closes it. infoOf(span) gives panel's info;
   * choose(span, char) rewrites the text from that character; undo(), when given, answers a click
   * on a .chargpt-undo button inside `text`; look(span), when given, is told of a character chosen
   * to look at (clicked, tapped or opened with the keyboard, not hovered): the page then shows
   * where the heads looked as the model wrote it. */
  function attachInspector(text, { selector, infoOf, choose, undo, look }) {
    addStyle();
    const popover = el("div", {
      className: "chargpt-popover",
      role: "dialog",
      hidden: true,
      "aria-label": "What the model considered at this character",
    });
    document.body.append(popover);
    let open = null,
      pinned = false,
      closing = null;
    const spanOf = (target) => (target instanceof Element ? target.closest(selector) : null);
    const spans = () => Array.from(text.querySelectorAll(selector));

    function close() {
      clearTimeout(closing);
      if (open) open.classList.remove("chargpt-open");
      popover.hidden = true;
      open = null;
      pinned = false;
    }

    function show(span, pin) {
      clearTimeout(closing);
      if (open && open !== span) open.classList.remove("chargpt-open");
      open = span;
      pinned = pin;
      span.classList.add("chargpt-open");
      popover.replaceChildren(
        panel(
          infoOf(span),
          (char) => {
            close();
            choose(span, char);
          },
          () => {
            close();
            span.focus();
          },
        ),
      );
      popover.hidden = false;
      const box = span.getBoundingClientRect(),
        width = popover.offsetWidth;
      const left = Math.min(Math.max(8, box.left), document.documentElement.clientWidth - width - 8);
      popover.style.left = `${left + window.scrollX}px`;
      popover.style.top = `${box.bottom + window.scrollY + 4}px`;
      if (pin && look) look(span);
    }

    const closeSoon = () => {
      if (!pinned) closing = setTimeout(close, CLOSE_AFTER_MS);
    };

    function move(span, key) {
      const all = spans(),
        at = all.indexOf(span);
      const to = {
        ArrowRight: at + 1,
        ArrowDown: at + 1,
        ArrowLeft: at - 1,
        ArrowUp: at - 1,
        Home: 0,
        End: all.length - 1,
      }[key];
      const next = all[Math.min(Math.max(to, 0), all.length - 1)];
      if (!next) return;
      if (!next.hasAttribute("tabindex")) next.tabIndex = -1;
      close();
      next.focus();
    }

    text.addEventListener("mouseover", (e) => {
      const span = spanOf(e.target);
      if (span && (!pinned || !open)) show(span, false);
    });
    text.addEventListener("mouseout", (e) => {
      if (spanOf(e.target) && !popover.contains(e.relatedTarget)) closeSoon();
    });
    popover.addEventListener("mouseenter", () => clearTimeout(closing));
    popover.addEventListener("mouseleave", closeSoon);
    text.addEventListener("click", (e) => {
      if (undo && e.target instanceof Element && e.target.closest(".chargpt-undo")) return undo();
      const span = spanOf(e.target);
      if (span) show(span, true);
    });
    text.addEventListener("keydown", (e) => {
      const span = spanOf(e.target);
      if (!span) return;
      if (e.key === "Enter" || e.key === " ") {
        e.preventDefault();
        show(span, true);
        popover.querySelector("tbody button, .chargpt-close")?.focus();
      } else if (e.key === "Escape") close();
      else if (["ArrowRight", "ArrowDown", "ArrowLeft", "ArrowUp", "Home", "End"].includes(e.key)) {
        e.preventDefault();
        move(span, e.key);
      }
    });
    popover.addEventListener("keydown", (e) => {
      if (e.key !== "Escape") return;
      const span = open;
      close();
      span?.focus();
    });
    document.addEventListener("pointerdown", (e) => {
      if (open && !popover.contains(e.target) && !spanOf(e.target)) close();
    });
    return { close, show };
  }

  /** The Gradio page's generated text (its HTML from webapp/server/coloured.py): each character's
   * alternatives and the request that wrote it are in its attributes; choosing an alternative or
   * Undo sends the request again with other choices, through `branch` (the component's trigger),
   * and looking at a character sends the text before it through `look`. */
  function inspectServerText(element, branch, look) {
    const selector = "span[data-alternatives]";
    const request = () => JSON.parse(element.querySelector("[data-request]").dataset.request);
    attachInspector(element, {
      selector,
      infoOf(span) {
        const rows = JSON.parse(span.dataset.alternatives).map(([char, model, sampled]) => ({ char, model, sampled }));
        return {
          position: Array.from(element.querySelectorAll(selector)).indexOf(span),
          drawn: span.textContent,
          rows,
          chosen: span.classList.contains("chargpt-chosen"),
          greedy: request().temperature === 0,
        };
      },
      choose(span, char) {
        const asked = request(),
          at = Array.from(element.querySelectorAll(selector)).indexOf(span);
        const choices = asked.choices.filter(([position]) => position < at).concat([[at, char]]);
        branch({ request: { ...asked, choices, undo: [...asked.undo, asked.choices] } });
      },
      undo() {
        const asked = request();
        if (asked.undo.length)
          branch({ request: { ...asked, choices: asked.undo.at(-1), undo: asked.undo.slice(0, -1) } });
      },
      look(span) {
        const before = Array.from(element.querySelectorAll(selector));
        const at = before.indexOf(span);
        look({
          text:
            element.querySelector("[data-request]").textContent +
            before
              .slice(0, at)
              .map((s) => s.textContent)
              .join(""),
        });
      },
    });
  }

  /** The chart of the next character's distribution, from /inspect's answer ({context, notice,
   * before, after}: the model's distribution and what a draw is made from, characters to
   * probabilities, the likeliest first; chargpt.js's nextCharacter on the static page). */
  function chart(answer) {
    addStyle();
    if (!answer || typeof answer !== "object" || !answer.before) return el("div", { className: "chargpt-chart" }, "…");
    // Sorted here: JavaScript objects put keys that look like whole numbers ("3") first.
    const before = Object.entries(answer.before).sort((a, b) => b[1] - a[1]),
      after = answer.after;
    const tail = Array.from(answer.context ?? "")
      .slice(-24)
      .map(visible)
      .join("");
    const bars = el("ol");
    const row = (label, model, draw, kept, data, className = "") =>
      el(
        "li",
        {
          className: [className, kept ? "chargpt-kept" : "chargpt-removed"].filter(Boolean).join(" "),
          dataset: data,
        },
        el("span", { className: "chargpt-char" }, label),
        el(
          "span",
          { className: "chargpt-track" },
          el("span", { className: "chargpt-model", style: `width: ${100 * model}%` }),
          el("span", { className: "chargpt-draw", style: `width: ${100 * draw}%` }),
        ),
        el("span", { className: "chargpt-number" }, `${model.toFixed(4)} → ${kept ? draw.toFixed(4) : "out"}`),
      );
    for (const [char, p] of before.slice(0, CHART_ROWS)) {
      const kept = char in after;
      bars.append(
        row(visible(char), p, kept ? after[char] : 0, kept, {
          char,
          before: String(p),
          after: String(kept ? after[char] : 0),
          kept: String(kept),
        }),
      );
    }
    const rest = before.slice(CHART_ROWS);
    if (rest.length) {
      const sum = (entries) => entries.reduce((total, [, p]) => total + p, 0);
      const keptRest = rest.filter(([char]) => char in after);
      bars.append(
        row(
          `+${rest.length}`,
          sum(rest),
          sum(keptRest.map(([char]) => [char, after[char]])),
          keptRest.length > 0,
          { rest: String(rest.length), kept: String(keptRest.length) },
          "chargpt-rest",
        ),
      );
    }
    const kept = Object.keys(after).length;
    return el(
      "div",
      { className: "chargpt-chart" },
      el(
        "p",
        {},
        el("strong", {}, "The next character"),
        ` after “${tail}”`,
        answer.notice ? ` (${answer.notice})` : "",
      ),
      el(
        "p",
        { className: "chargpt-line" },
        `The model's ${CHART_ROWS} likeliest and the rest. Grey: the model's probability; ` +
          "blue: the chance in a draw after temperature, top-k, top-p and min-p (struck out: removed). " +
          `They keep ${kept} of ${before.length} characters.`,
      ),
      bars,
    );
  }

  const HEAT_LEVELS = 10; // a small map's shades: its spans carry a class rather than a style each

  /** A weight's shade: its share of the map's largest, as a red background's opacity. */
  const heat = (weight, largest) => (largest > 0 ? weight / largest : 0);

  /** Where every head looked, from /inspect's answer ({context, attention: {characters, heads:
   * [{layer, head, weights}]} or null, attention_notice}; chargpt.js's CharGPT.attention on the
   * static page): a grid of small maps, layers down and heads across, each the window's characters
   * with heat behind them. attachAttention(container) makes a click on a map enlarge it. */
  function attention(answer) {
    addStyle();
    if (!answer || typeof answer !== "object" || !("attention" in answer))
      return el("div", { className: "chargpt-attention" }, "…");
    const found = answer.attention;
    const title = el("p", {}, el("strong", {}, "Where each head looked"));
    if (!found) {
      return el(
        "div",
        { className: "chargpt-attention" },
        title,
        el(
          "p",
          { className: "chargpt-notice" },
          answer.attention_notice || "This model has no attention file, so there is nothing to show.",
        ),
      );
    }
    const chars = found.characters;
    const layers = Math.max(...found.heads.map((h) => h.layer)) + 1,
      heads = Math.max(...found.heads.map((h) => h.head)) + 1;
    const tail = Array.from(answer.context ?? "")
      .slice(-24)
      .map(visible)
      .join("");
    const grid = el(
      "div",
      {
        className: "chargpt-heads",
        style: `--heads: ${heads}`,
        role: "group",
        "aria-label": `${layers} layers by ${heads} heads`,
      },
      el("span"),
    );
    for (let h = 0; h < heads; h++) grid.append(el("span", { className: "chargpt-label" }, `head ${h + 1}`));
    const byPlace = new Map(found.heads.map((entry) => [`${entry.layer},${entry.head}`, entry.weights]));
    for (let l = 0; l < layers; l++) {
      grid.append(el("span", { className: "chargpt-label" }, `layer ${l + 1}`));
      for (let h = 0; h < heads; h++) {
        const weights = byPlace.get(`${l},${h}`) ?? [];
        const largest = Math.max(0, ...weights);
        const map = el("button", {
          type: "button",
          className: "chargpt-head",
          "aria-pressed": "false",
          title: `Layer ${l + 1}, head ${h + 1}: click to enlarge`,
          "aria-label": `Layer ${l + 1}, head ${h + 1}; heaviest on ${spoken(chars[weights.indexOf(largest)] ?? "")}`,
          dataset: { layer: String(l), head: String(h), weights: weights.join(",") },
        });
        weights.forEach((w, i) => {
          const level = Math.round(heat(w, largest) * HEAT_LEVELS);
          map.append(
            el(
              "span",
              { style: level ? `background: rgba(220, 38, 38, ${level / HEAT_LEVELS})` : "" },
              visible(chars[i]),
            ),
          );
        });
        grid.append(map);
      }
    }
    return el(
      "div",
      { className: "chargpt-attention", dataset: { characters: JSON.stringify(chars) } },
      title,
      el(
        "p",
        { className: "chargpt-line" },
        `When the model computed the character after “${tail}”, each head of each layer ` +
          `weighed the last ${chars.length} characters (its window; the last is where it stands). Darker: more weight, ` +
          "against the map's largest. Rows: layers; columns: heads. Click or tap a map, or Tab to it and press Enter, to enlarge it.",
      ),
      grid,
      el("div", { className: "chargpt-enlarged", hidden: true, "aria-live": "polite" }),
    );
  }

  /** The enlarged map of one head (its button in the grid): the window's characters large, with
   * their weights as heat and in their titles, and the five heaviest listed. */
  function enlarged(view, button) {
    const chars = JSON.parse(view.dataset.characters);
    const weights = button.dataset.weights.split(",").map(Number);
    const largest = Math.max(0, ...weights);
    const heatText = el("div", { className: "chargpt-heat" });
    weights.forEach((w, i) =>
      heatText.append(
        el(
          "span",
          {
            className: i === weights.length - 1 ? "chargpt-self" : "",
            style: `background: rgba(220, 38, 38, ${heat(w, largest).toFixed(3)})`,
            title: `${spoken(chars[i])}: ${w.toFixed(DIGITS)}`,
            dataset: { weight: String(w) },
          },
          visible(chars[i]),
        ),
      ),
    );
    const heaviest = weights
      .map((w, i) => [w, i])
      .sort((a, b) => b[0] - a[0])
      .slice(0, 5)
      .map(
        ([w, i]) =>
          `${visible(chars[i])} ${w.toFixed(4)} (${weights.length - 1 - i ? `${weights.length - 1 - i} back` : "itself"})`,
      );
    return [
      el("button", { type: "button", className: "chargpt-close", title: "Close (Esc)" }, "×"),
      el("h4", {}, `Layer ${Number(button.dataset.layer) + 1}, head ${Number(button.dataset.head) + 1}`),
      heatText,
      el(
        "p",
        { className: "chargpt-line" },
        `Heaviest: ${heaviest.join(", ")}. The outlined character is where the head stands.`,
      ),
    ];
  }

  /** Makes the attention views inside `container` (drawn now or later) answer clicks, taps and
   * the keyboard: a map enlarges below the grid (a second click, × or Esc closes it). */
  function attachAttention(container) {
    addStyle();
    const close = (view) => {
      const box = view.querySelector(".chargpt-enlarged"),
        pressed = view.querySelector('.chargpt-head[aria-pressed="true"]');
      box.hidden = true;
      box.replaceChildren();
      pressed?.setAttribute("aria-pressed", "false");
      return pressed;
    };
    container.addEventListener("click", (e) => {
      const target = e.target instanceof Element ? e.target : null;
      const view = target?.closest(".chargpt-attention");
      if (!view) return;
      if (target.closest(".chargpt-enlarged .chargpt-close")) return close(view)?.focus();
      const button = target.closest(".chargpt-head");
      if (!button) return;
      const again = button.getAttribute("aria-pressed") === "true";
      close(view);
      if (again) return;
      button.setAttribute("aria-pressed", "true");
      const box = view.querySelector(".chargpt-enlarged");
      box.replaceChildren(...enlarged(view, button));
      box.hidden = false;
    });
    container.addEventListener("keydown", (e) => {
      const view = e.target instanceof Element ? e.target.closest(".chargpt-attention") : null;
      if (e.key === "Escape" && view && !view.querySelector(".chargpt-enlarged").hidden) close(view)?.focus();
    });
  }

  addStyle();
  root.chargptViews = {
    ALTERNATIVES,
    visible,
    attachInspector,
    inspectServerText,
    chart,
    chartHtml: (answer) => chart(answer).outerHTML,
    attention,
    attentionHtml: (answer) => attention(answer).outerHTML,
    attachAttention,
  };
})(globalThis);
