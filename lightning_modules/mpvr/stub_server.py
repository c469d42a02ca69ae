"""A loopback OpenAI-compatible HTTP server that stands in for the paid LLM (demo and tests only).

It listens on 127.0.0.1 at an ephemeral port, in a thread, answers `/v1/completions` and
`/v1/chat/completions` deterministically (a hash of the prompt and the choice index seeds each answer),
and is stopped by whoever started it (`with LoopbackLLM(...) as server: server.base_url`). So the real
`openai` client, the cache, the stage-1 parser and stage 2 all run here with no network.

What it "knows": a table class name -> (shape, colour, pattern) of the demo world. Stage 1 (a prompt
with "Dataset Name:") gets query templates in a Python code fence; stage 2 gets n short descriptions of
the class named in the prompt -- mostly the class's attributes in paraphrase, some deliberately
uninformative. Failure modes for the tests: an HTTP status for the first `fail_times` requests (or all),
ignoring n (as ollama does), a delay (timeouts), or a stage-1 answer with no placeholder.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_BODY = 1 << 20  # bytes: a bounded request

QUERY_TEMPLATES = (
    "Describe what a <class name> looks like.", "What colour is a <class name>?",
    "What shape does a <class name> have?", "How can you recognize a <class name> in a picture?",
    "Describe the pattern on the surface of a <class name>.", "What does a <class name> look like in a photo?",
    "Describe the outline of a <class name>.", "What are the visual features of a <class name>?",
    "How would you draw a <class name>?", "What colours would a painter use for a <class name>?",
    "Describe a <class name> to someone who has never seen one.", "What is the silhouette of a <class name>?",
    "How does a <class name> differ from similar objects?", "Describe the texture of a <class name>.",
    "What does a <class name> look like from the front?", "Which geometric shape best matches a <class name>?",
    "Describe the colour and fill of a <class name>.", "What would a child draw for a <class name>?",
    "Describe an icon of a <class name>.", "How is a <class name> shown in a simple drawing?",
    "What makes a <class name> easy to spot?", "Describe a photo of a <class name> on a plain background.",
    "What is the typical appearance of a <class name>?", "Describe the markings of a <class name>.",
    "How big and what shape is a <class name>?", "What stands out visually about a <class name>?",
    "Describe a cartoon of a <class name>.", "What does a <class name> look like up close?",
    "Describe the main colour of a <class name>.", "Describe the form of a <class name>.",
    "What pattern, if any, does a <class name> have?", "Give a visual description of a <class name>.",
    "How would you describe a <class name> in a few words?",
)
_SHAPE_WORDS = {"circle": ("circle", "round disc", "round shape"), "square": ("square", "square box", "square"),
                "triangle": ("triangle", "triangular shape", "triangle"), "cross": ("cross", "plus shape", "cross"),
                "ring": ("ring", "hollow circle", "ring"), "diamond": ("diamond", "diamond shape", "rhombus")}
_PATTERN_WORDS = {"solid": ("solid", "plain", "filled"), "striped": ("striped", "with stripes", "stripy"),
                  "dotted": ("dotted", "with dots", "spotted")}
_UNINFORMATIVE = ("It is a thing many people know well.", "People often talk about it.",
                  "It can be found in many places.", "There is nothing unusual about it.")


class StubBehaviour:
    """What the stub does; tests change these fields on a running server."""

    def __init__(self) -> None:
        self.status: int | None = None  # answer every request (or the first fail_times) with this status
        self.fail_times: int | None = None
        self.ignore_n = False
        self.delay_s = 0.0
        self.stage1_prose = False  # a stage-1 answer with no <class name> slot


class LoopbackLLM:
    """`with LoopbackLLM(knowledge) as llm:` -- an OpenAI-compatible server on 127.0.0.1:<ephemeral>."""

    def __init__(self, knowledge: Mapping[str, tuple[str, str, str]]) -> None:
        self.knowledge = dict(knowledge)
        self.behaviour = StubBehaviour()
        self.requests = 0  # HTTP requests received
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "the stub server is not running"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> LoopbackLLM:
        self._server = _QuietServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="mpvr-stub-llm", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    # ---- answers

    def answer(self, prompt: str, n: int, max_tokens: int) -> list[str]:
        if "Dataset Name:" in prompt and "Prompts:" in prompt:
            return [self._stage1(prompt)]
        return [self._stage2(prompt, i, max_tokens) for i in range(n)]

    def _stage1(self, prompt: str) -> str:
        if self.behaviour.stage1_prose:
            return "Here are some ideas: think about colours, shapes and textures of the objects."
        lines = [f'prompts.append("{q}")' for q in QUERY_TEMPLATES]
        lines.insert(3, lines[1])  # a duplicate, and a line without the slot: the parser drops both
        lines.insert(7, 'prompts.append("Describe this dataset.")')
        return "Sure! Here are the prompts:\n```python\nprompts = []\n" + "\n".join(lines) + "\n```"

    def _stage2(self, prompt: str, index: int, max_tokens: int) -> str:
        rng = random.Random(hashlib.sha256(f"{prompt}\x00{index}".encode()).hexdigest())
        name = max((k for k in self.knowledge if k.lower() in prompt.lower()), key=len, default=None)
        if name is None or rng.random() < 0.2:
            text = rng.choice(_UNINFORMATIVE)
        else:
            shape, colour, pattern = self.knowledge[name]
            s, p = rng.choice(_SHAPE_WORDS[shape]), rng.choice(_PATTERN_WORDS[pattern])
            text = rng.choice((
                f"A {name} is a {colour} {s}.", f"It is {colour} and {p}, shaped like a {s}.",
                f"It looks like a {p} {colour} {s}.", f"The {name} is {colour}.", f"It has the shape of a {s}.",
                f"Usually {colour}, it is a {p} {s}.", f"You can spot it as a {colour} {s} that is {p}.",
            ))
        return " ".join(text.split()[:max_tokens])


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (a timeout test) is not the server's error


def _handler(stub: LoopbackLLM) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                return self._send(413, {"error": {"message": "request too large"}})
            body = json.loads(self.rfile.read(length) or b"{}")
            with stub._lock:
                stub.requests += 1
                count = stub.requests
            b = stub.behaviour
            if b.delay_s:
                time.sleep(b.delay_s)
            if b.status is not None and (b.fail_times is None or count <= b.fail_times):
                return self._send(b.status, {"error": {"message": f"stub status {b.status}", "type": "stub"}},
                                  {"retry-after-ms": "1"})
            chat = self.path.endswith("/chat/completions")
            if chat:
                prompt = "\n".join(m.get("content") or "" for m in body.get("messages", []))
            elif self.path.endswith("/completions"):
                prompt = body.get("prompt", "")
            else:
                return self._send(404, {"error": {"message": f"no route {self.path}"}})
            n = 1 if b.ignore_n else int(body.get("n") or 1)
            texts = stub.answer(prompt, n, int(body.get("max_tokens") or 50))
            if chat:
                choices = [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
                           for i, t in enumerate(texts)]
            else:
                choices = [{"index": i, "text": t, "finish_reason": "stop", "logprobs": None}
                           for i, t in enumerate(texts)]
            self._send(200, {"id": f"stub-{count}", "object": "chat.completion" if chat else "text_completion",
                             "created": 0, "model": body.get("model", "stub"), "choices": choices,
                             "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}})

        def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

    return Handler
