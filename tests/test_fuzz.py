"""Random hostile requests through the web app's HTTP API: prompts of random Unicode (control
characters, lone surrogates, astral characters, combining marks, right-to-left and zero-width
characters) from empty to 2 million characters, and random parameter values of every JSON type,
to /generate and /inspect, and random choices of alternatives to the page's private event.
Every answer must be text (or JSON) or a clear error sentence, never a server error, and the
server's memory must stay bounded.

CI runs 24 cases (a fixed seed: the same ones each run);
`python -m pytest tests/test_fuzz.py --fuzz-cases 1000` is the full test.
"""

from __future__ import annotations

import json
import math
import random

import pytest
from helpers import fn_index_of, queue_call, raw_generate, rss_mb, server

from webapp.inference.sampling import MAX_NEW_TOKENS
from webapp.server.size_limit import DRAIN_BYTES
from webapp.server.streaming import REQUEST_FIELDS

MAX_PROMPT = 2_000_000  # characters
CODE_POINTS = [  # (first, last): the kinds of characters a prompt is drawn from
    (0x20, 0x7E),  # printable ASCII
    (0x00, 0x1F),
    (0x7F, 0x9F),  # C0 controls, DEL, C1 controls
    (0xD800, 0xDFFF),  # lone surrogates
    (0x0300, 0x036F),  # combining marks
    (0x0590, 0x06FF),  # Hebrew and Arabic: right to left
    (0x200B, 0x206F),  # zero-width characters, bidi controls, line and paragraph separators
    (0x4E00, 0x9FFF),  # CJK
    (0x1F300, 0x1FAFF),  # emoji
    (0xE000, 0xF8FF),
    (0xF0000, 0x10FFFF),  # private use
]
MEMORY_GROWTH_MB = 100
# What Gradio logs with a traceback for an error answer that is not a refusal of ours (those are
# one line each: webapp/server/page.py's refuse): its own input checks. Any other exception is a server error.
ANSWERED_ERRORS = ("gradio.exceptions.Error:", "gradio.exceptions.ComponentProcessingError:")
CHAINED = ("The above exception was the direct cause", "During handling of the above exception")


def random_prompt(rng: random.Random) -> str:
    if rng.random() < 0.05:
        return ""
    length = int(math.exp(rng.uniform(0, math.log(MAX_PROMPT))))  # log-uniform: mostly short, some huge
    kinds = rng.sample(CODE_POINTS, rng.randint(1, 3))
    if len(kinds) == 1:
        lo, hi = kinds[0]
        return "".join(map(chr, (rng.randint(lo, hi) for _ in range(length))))
    return "".join(chr(rng.randint(*rng.choice(kinds))) for _ in range(length))


def random_value(rng: random.Random, low: float, high: float, integer: bool):
    """Mostly a valid value; otherwise a boundary, a huge or special number, or another type."""
    kind = rng.random()
    if kind < 0.85:
        if integer:  # log-uniform, so long generations stay rare
            return (
                int(math.exp(rng.uniform(math.log(max(low, 1)), math.log(max(high, 1)))))
                if low >= 1
                else rng.randint(int(low), int(high))
            )
        return rng.uniform(low, high)
    if kind < 0.88:
        return rng.choice([low, high, low - 1, high + 1, low - 0.5, high + 0.001])
    if kind < 0.91:
        return rng.choice([-1, -(10**6), 10**18, 10**30, -1e308, 1e308, 2**63, 2**64])
    if kind < 0.94:
        return rng.choice([math.nan, math.inf, -math.inf, -0.0, 1e-320])
    if kind < 0.97:
        return rng.choice(["", "abc", "12", "1e3", "-1", "nan", None, True, False, [], {}, [1, 2], {"a": 1}])
    return random_prompt(rng)[:50]


def random_request(rng: random.Random) -> list:
    return [
        random_prompt(rng) if rng.random() < 0.95 else rng.choice([None, 42, ["ROMEO:"], {"text": "x"}, True]),
        random_value(rng, 1, MAX_NEW_TOKENS, True),  # characters to generate
        random_value(rng, 0, 2, False),  # temperature
        random_value(rng, 0, 65, True),  # top-k
        random_value(rng, 0.05, 1, False),  # top-p
        random_value(rng, -1, 2**63 - 1, True) if rng.random() < 0.9 else rng.choice([None, "", -1]),  # seed
        *([random_value(rng, 0, 1, False)] if rng.random() < 0.8 else []),  # min-p, or left out as older calls do
        *(
            [random_flag(rng)] if rng.random() < 0.3 else []
        ),  # alternatives (min-p's place filled by the padding if it was left out)
    ]


def random_flag(rng: random.Random):
    """Mostly a boolean; otherwise anything JSON holds."""
    return rng.choice([True, False]) if rng.random() < 0.8 else rng.choice([None, 0, 1, "true", "yes", 2, 0.5, [], {}])


def random_inspect(rng: random.Random) -> list:
    """/inspect's inputs: a text and the four settings a chart shows, some left out. Its texts
    stop at 20,000 characters: the body limit in front of every endpoint is /generate's cases'."""
    request = random_request(rng)
    text = request[0][:20_000] if isinstance(request[0], str) else request[0]
    return [text, *request[2:5], *request[6:7]]


def random_choices(rng: random.Random):
    """What the page's choice event may be sent: mostly [position, character] pairs, some not."""
    if rng.random() < 0.15:
        return rng.choice([None, "x", 3, [[1]], [["a", "b"]], {"at": 1}, [[True, "a"]], [[2, "ab"]], [[10**30, "a"]]])
    at, found = -1, []
    for _ in range(rng.randint(0, 4)):
        at += rng.randint(0 if rng.random() < 0.1 else 1, 40)
        found.append([at, rng.choice(["e", " ", "\n", "a", "Z", "☃", "\ud800"])])
    return found


def check_answer(event: str, data, request: list) -> str:
    """'text' or 'error' for an acceptable answer; an AssertionError otherwise."""
    if event.startswith("http "):
        assert int(event.split()[1]) < 500, (event, str(data)[:300])
        return "error"
    if event == "complete" and len(data) == 1:  # /inspect's JSON
        answer = data[0]
        assert set(answer) == {"context", "notice", "before", "after", "attention", "attention_notice"}, str(data)[:300]
        assert answer["after"] and abs(sum(answer["after"].values()) - 1) < 1e-6, str(data)[:300]
        heads = answer["attention"]["heads"]  # the shipped model has its attention file
        assert all(
            abs(sum(h["weights"]) - 1) < 1e-5 and len(h["weights"]) == len(answer["attention"]["characters"])
            for h in heads
        ), str(data)[:300]
        return "text"
    if event == "complete":
        text, colored, stats = data
        assert isinstance(text, str), str(data)[:300]
        assert isinstance(colored, str), str(data)[:300]
        assert "characters in" in stats, str(data)[:300]
        return "text"
    assert event == "error", event
    message = data.get("error") if isinstance(data, dict) else data  # Gradio 6 sends {"error": ..., "title": ...}
    assert isinstance(message, str), (data, [str(v)[:50] for v in request])
    assert message.strip(), (data, [str(v)[:50] for v in request])
    assert "Traceback" not in message, (data, [str(v)[:50] for v in request])
    return "error"


def send(url: str, data: list, endpoint: str = "generate") -> tuple[str, object]:
    """raw_generate, where a body so large that the server stops reading it (its connection is
    reset: the server's own protection) counts as refused."""
    try:
        return raw_generate(url, data, endpoint=endpoint)
    except OSError as e:
        too_large = len(json.dumps({"data": data})) > DRAIN_BYTES
        if too_large and "reset" in str(e).lower():
            return "http 413", "cut off"
        raise


def server_errors(log: str) -> list[str]:
    """The outermost exception of each traceback in the server's log that is not an error answer
    (a traceback followed by a chaining line is the cause of the next one, not the outermost)."""
    found = []
    for segment in log.split("Traceback (most recent call last):")[1:]:
        exception = next((line for line in segment.splitlines()[1:] if line and not line[0].isspace()), "")
        if not any(marker in segment for marker in CHAINED) and not exception.startswith(ANSWERED_ERRORS):
            found.append(exception)
    return found


@pytest.fixture(scope="module")
def fuzzed_app(exported, tmp_path_factory):
    log = tmp_path_factory.mktemp("fuzz") / "server.log"
    with open(log, "w") as stderr, server("--model", str(exported[1]), stderr=stderr) as (url, proc):
        yield url, proc, log


def test_random_hostile_requests_get_text_or_a_sentence_and_memory_stays_bounded(fuzzed_app, request):
    url, proc, log = fuzzed_app
    cases = request.config.getoption("--fuzz-cases")
    seed = request.config.getoption("--fuzz-seed")
    seed = random.randrange(10**6) if seed == -1 else seed
    rng = random.Random(seed)
    warm = rng.choice(CODE_POINTS)
    for prompt in ("ROMEO:", "x" * MAX_PROMPT, "".join(chr(rng.randint(*warm)) for _ in range(10_000))):
        raw_generate(url, [prompt, 50, 0.8, 0, 1.0, 1])  # the allocator's working set, before measuring
    before = rss_mb(proc.pid)
    outcomes = {"text": 0, "error": 0}
    branch = fn_index_of(url, "branch")
    for case in range(cases):
        data = random_request(rng)
        inspected = random_inspect(rng)
        asked = dict(zip(REQUEST_FIELDS, random_request(rng)))
        asked.update(
            prompt=asked["prompt"][:20_000]
            if isinstance(asked["prompt"], str)
            else asked["prompt"],  # a body the queue reads
            max_new_tokens=min(asked["max_new_tokens"], 40) if isinstance(asked["max_new_tokens"], int) else 40,
            choices=random_choices(rng),
            undo=[] if rng.random() < 0.9 else random_choices(rng),
        )
        try:
            outcomes[check_answer(*send(url, data), data)] += 1
            if case % 2 == 0:  # a forward each: half as many as /generate's cases
                outcomes[check_answer(*send(url, inspected, "inspect"), inspected)] += 1
            if case % 4 == 0:  # up to 17 generations each: a quarter
                chosen = queue_call(url, branch, [], {"request": asked}, session=f"fuzz{case}")
                said = chosen["output"].get("error")
                assert chosen["success"] or (isinstance(said, str) and said.strip() and "Traceback" not in said), str(
                    chosen
                )[:300]
        except AssertionError as e:
            raise AssertionError(f"case {case} of seed {seed}: {e}") from None
    after = rss_mb(proc.pid)
    assert proc.poll() is None, "the server died"
    assert not server_errors(log.read_text()), server_errors(log.read_text())[:5]
    assert after - before < MEMORY_GROWTH_MB, f"RSS grew from {before:.0f} to {after:.0f} MB over {cases} cases"
    assert outcomes["text"], outcomes
    assert outcomes["error"], outcomes  # both kinds of answer were exercised
    print(f"fuzz seed {seed}: {cases} cases, {outcomes}, RSS {before:.0f} -> {after:.0f} MB")


def test_the_log_check_tells_error_answers_from_server_errors():
    frame = '  File "x.py", line 1, in f\n    f()\n'
    log = (
        f"Traceback (most recent call last):\n{frame}TypeError: '<' not supported\n\n"
        "The above exception was the direct cause of the following exception:\n\n"
        f"Traceback (most recent call last):\n{frame}gradio.exceptions.ComponentProcessingError: Could not preprocess\n"
        f"Traceback (most recent call last):\n{frame}gradio.exceptions.Error: 'Value 3 is greater than maximum "
        "value 2.'\n"
        f"Traceback (most recent call last):\n{frame}KeyError: 'vocab'\nsome later log line\n"
    )
    assert server_errors(log) == ["KeyError: 'vocab'"]
