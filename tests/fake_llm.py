"""A small OpenAI-compatible chat server on 127.0.0.1, scripted per class, for driving the real client.

Each request's class is read from the last question of the prompt. A script
maps a class to a queue of replies: answer text, an HTTP error (with
headers), or a delay longer than the client will wait. Every request is
recorded, so tests can check what the client sent. A server made with
`structured=False` refuses requests that ask for JSON in a schema
(`response_format`), as servers without structured output do.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

QUESTION = re.compile(r"Q: What are useful features for distinguishing a (.+?) in a photo\?\s*A:[^\n]*\n-\s*$")


@dataclass
class Reply:
    text: str = ""
    status: int = 200
    headers: dict = field(default_factory=dict)
    delay: float = 0.0
    error_message: str = "scripted failure"


def answer(text: str) -> Reply:
    return Reply(text=text)


def failure(status: int, message: str = "scripted failure", **headers) -> Reply:
    return Reply(status=status, headers={k.replace("_", "-"): v for k, v in headers.items()}, error_message=message)


def stall(seconds: float) -> Reply:
    return Reply(text="- too late", delay=seconds)


class FakeLLM:
    """Start with `with FakeLLM() as llm:`; `llm.url` is the base URL to give the client."""

    def __init__(
        self,
        default=lambda class_name: answer(f"- {class_name} feature one\n- feature two\n- feature three"),
        structured: bool = True,
    ):
        self.structured = structured
        self.scripts: dict[str, deque[Reply]] = defaultdict(deque)
        self.default = default
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}/v1"

    def script(self, class_name: str, *replies: Reply) -> None:
        self.scripts[class_name].extend(replies)

    def calls_for(self, class_name: str) -> int:
        return sum(1 for request in self.requests if request["class"] == class_name)

    def __enter__(self) -> FakeLLM:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _reply_for(self, class_name: str) -> Reply:
        with self._lock:
            queue = self.scripts.get(class_name)
            return queue.popleft() if queue else self.default(class_name)

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                prompt = body.get("messages", [{}])[-1].get("content", "")
                match = QUESTION.search(prompt)
                class_name = match.group(1) if match else ""
                with fake._lock:
                    fake.requests.append(
                        {
                            "path": self.path,
                            "body": body,
                            "prompt": prompt,
                            "class": class_name,
                            "headers": {k.lower(): v for k, v in self.headers.items()},
                        }
                    )
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                if "response_format" in body and not fake.structured:
                    return self._send(400, {"error": {"message": "response_format is not supported"}})
                reply = fake._reply_for(class_name)
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.status != 200:
                    return self._send(
                        reply.status, {"error": {"message": reply.error_message, "type": "scripted"}}, reply.headers
                    )
                self._send(
                    200,
                    {
                        "id": "chatcmpl-test",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body.get("model", ""),
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": reply.text},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    },
                )

            def _send(self, status, payload, headers=None):
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in (headers or {}).items():
                        self.send_header(key, str(value))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting
                    pass

        return Handler
