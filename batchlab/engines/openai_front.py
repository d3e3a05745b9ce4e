"""An OpenAI-compatible HTTP front for the serving engine (`batchlab.engines.serving`).

    batchlab serve --policy continuous --backend torch --port 8000
    curl -N http://127.0.0.1:8000/v1/completions \\
        -d '{"model": "batchlab", "prompt": [1, 2, 3], "max_tokens": 16, "stream": true}'

so that `vllm bench serve`, genai-perf and OpenAI clients can drive any batchlab policy.
Needs the `serve` extra (starlette, uvicorn): `pip install 'batchlab[serve]'`.

Endpoints:
  POST /v1/completions  prompt: token ids, [[ids]] (one prompt), or text; max_tokens (16);
      stream (server-sent events, ended by `data: [DONE]`); stream_options.include_usage;
      priority; return_token_ids (vLLM's extension: token ids beside the text).
      Sampling fields clients send by habit (temperature, top_p, seed, ignore_eos, ...) are
      accepted and ignored: a request always produces exactly max_tokens tokens, as
      benchmarks ask. A field that is not known is named in a 400 error, as is a value
      batchlab cannot honour (n > 1, logprobs, echo, stop).
  GET /v1/models        the one model served.
  GET /health           200.

Text: a trivial tokenizer, one token per UTF-8 byte of the prompt, and one printable character
per output token (ids from a device without ids, -1, print as "?"). It is there so that text
clients work; measure with token ids.
A client that disconnects cancels its request (the policy aborts it). Loopback by default.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from contextlib import asynccontextmanager

from ..core.errors import BatchlabError, ConfigError
from .serving import RequestRejected, Server

LOOPBACK = "127.0.0.1"
IGNORED = frozenset({"temperature", "top_p", "top_k", "min_p", "seed", "user", "ignore_eos",
                     "presence_penalty", "frequency_penalty", "repetition_penalty",
                     "min_tokens", "skip_special_tokens", "spaces_between_special_tokens"})
HONOURED = frozenset({"model", "prompt", "max_tokens", "stream", "stream_options", "priority",
                      "return_token_ids"})
# Fields accepted only at their neutral value.
NEUTRAL = {"n": (None, 1), "best_of": (None, 1), "logprobs": (None, 0), "echo": (None, False),
           "stop": (None, [], ""), "suffix": (None, ""), "logit_bias": (None, {}),
           "stop_token_ids": (None, [])}


class BadRequest(BatchlabError):
    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


def encode_text(text: str) -> list[int]:
    return list(text.encode("utf-8")) or [0]


def decode_token(token: int) -> str:
    return "?" if token < 0 else chr(32 + token % 95)


def parse_completion(body, served_model: str) -> dict:
    """The request's settings, or BadRequest naming the field at fault."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    unknown = sorted(k for k in body if k not in HONOURED | IGNORED | set(NEUTRAL))
    if unknown:
        raise BadRequest(f"unknown field(s) {', '.join(map(repr, unknown))}; batchlab's "
                         "/v1/completions takes " + ", ".join(sorted(HONOURED)), unknown[0])
    for key, allowed in NEUTRAL.items():
        if key in body and body[key] not in allowed:
            raise BadRequest(f"{key}={body[key]!r} is not supported (only {allowed[-1]!r})", key)
    model = body.get("model", served_model)
    if model != served_model:
        raise BadRequest(f"model {model!r} is not served here; this server serves "
                         f"{served_model!r}", "model")
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (list, str)):
        prompt = prompt[0]
    if isinstance(prompt, str):
        ids = encode_text(prompt)
    elif isinstance(prompt, list) and prompt and all(
            isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        ids = prompt
    elif isinstance(prompt, list) and prompt and all(isinstance(p, (list, str)) for p in prompt):
        raise BadRequest(f"prompt holds {len(prompt)} prompts; send one request per prompt",
                         "prompt")
    else:
        raise BadRequest("prompt must be a string or a non-empty list of token ids, got "
                         f"{prompt!r}"[:200], "prompt")
    settings = {"ids": ids, "model": served_model}
    for key, default, low in (("max_tokens", 16, 1), ("priority", 0, None)):
        value = body.get(key, default)
        if value is None:
            value = default
        if isinstance(value, bool) or not isinstance(value, int) or \
                (low is not None and value < low):
            raise BadRequest(f"{key} must be an int" + (f" >= {low}" if low else "") +
                             f", got {value!r}", key)
        settings[key] = value
    for key in ("stream", "return_token_ids"):
        if not isinstance(body.get(key, False), bool):
            raise BadRequest(f"{key} must be true or false, got {body[key]!r}", key)
        settings[key] = body.get(key, False)
    options = body.get("stream_options") or {}
    if not isinstance(options, dict) or set(options) - {"include_usage",
                                                        "continuous_usage_stats"}:
        raise BadRequest(f"stream_options must be {{'include_usage': bool}}, got {options!r}",
                         "stream_options")
    settings["include_usage"] = bool(options.get("include_usage", False))
    return settings


def create_app(server: Server, *, model: str = "batchlab"):
    """A Starlette app serving `server` (started by the caller, or by the app's lifespan if
    it is not yet)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    created = int(time.time())

    def error(status: int, message: str, param=None, kind="invalid_request_error"):
        return JSONResponse({"error": {"message": message, "type": kind, "param": param,
                                       "code": None}}, status_code=status)

    async def models(request: Request):
        return JSONResponse({"object": "list", "data": [
            {"id": model, "object": "model", "created": created, "owned_by": "batchlab",
             "max_model_len": None}]})

    async def health(request: Request):
        return JSONResponse({"ok": True})

    async def completions(request: Request):
        try:
            body = json.loads(await request.body())
        except ValueError as exc:
            return error(400, f"the request body is not JSON: {exc}")
        try:
            s = parse_completion(body, model)
            stream = server.submit(s["ids"], s["max_tokens"], priority=s["priority"])
        except BadRequest as exc:
            return error(400, str(exc), exc.param)
        except ConfigError as exc:
            return error(400, str(exc), "prompt")
        except BatchlabError as exc:   # the engine has failed
            return error(503, str(exc), kind="server_error")
        cid = f"cmpl-{uuid.uuid4().hex[:24]}"
        head = {"id": cid, "object": "text_completion", "created": int(time.time()),
                "model": model}
        usage = lambda n: {"prompt_tokens": len(s["ids"]), "completion_tokens": n,
                           "total_tokens": len(s["ids"]) + n}
        if not s["stream"]:
            try:
                tokens = await stream.collect()
            except RequestRejected as exc:
                return error(503, str(exc), kind="server_error")
            except BatchlabError as exc:
                return error(500, str(exc), kind="server_error")
            finally:
                stream.cancel()
            choice = {"index": 0, "text": "".join(map(decode_token, tokens)), "logprobs": None,
                      "finish_reason": _finish(stream)}
            if s["return_token_ids"]:
                choice.update(token_ids=tokens, prompt_token_ids=s["ids"])
            return JSONResponse({**head, "choices": [choice], "usage": usage(len(tokens))})

        async def events():
            try:
                async for token in stream:
                    choice = {"index": 0, "text": decode_token(token), "logprobs": None,
                              "finish_reason": None}
                    if s["return_token_ids"]:
                        choice["token_ids"] = [token]
                    yield _sse({**head, "choices": [choice]})
                yield _sse({**head, "choices": [{"index": 0, "text": "", "logprobs": None,
                                                 "finish_reason": _finish(stream)}]})
                if s["include_usage"]:
                    yield _sse({**head, "choices": [], "usage": usage(len(stream.tokens))})
            except BatchlabError as exc:
                yield _sse({"error": {"message": str(exc), "type": "server_error"}})
            finally:
                stream.cancel()   # the client left early: free the policy's memory
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @asynccontextmanager
    async def lifespan(app):
        started = getattr(server, "_thread", None) is not None
        if not started:
            await server.start()
        try:
            yield
        finally:
            if not started:
                await server.close()

    return Starlette(routes=[Route("/v1/completions", completions, methods=["POST"]),
                             Route("/v1/models", models, methods=["GET"]),
                             Route("/health", health, methods=["GET"])],
                     lifespan=lifespan)


@asynccontextmanager
async def running(app, *, host: str = LOOPBACK, port: int = 0):
    """Serve `app` with uvicorn on this event loop while the block runs; yields its base URL
    (port 0 picks a free port). For tests and for embedding the front in other asyncio code."""
    import uvicorn
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                           lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise ConfigError(f"the OpenAI front could not start on {host}:{port}")
        await asyncio.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        await task


def _finish(stream) -> str:
    return {"finished": "length", "aborted": "abort"}.get(stream.status, "abort")


def _sse(payload: dict) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"
