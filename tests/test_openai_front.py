"""The OpenAI-compatible front (batchlab.engines.openai_front), over real HTTP on loopback.

The server runs a real policy on an AffineDevice waited out in real time (no torch needed);
uvicorn binds 127.0.0.1 on a free port. Skipped without the serve extra (starlette, uvicorn,
httpx), which CI installs.
"""

from __future__ import annotations

import asyncio
import json

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

import batchlab  # noqa: E402
from batchlab.engines.openai_front import create_app, parse_completion, running  # noqa: E402
from batchlab.engines.serving import Server  # noqa: E402
from batchlab.core.table import ABORTED, FINISHED  # noqa: E402
from test_serving_server import Spy  # noqa: E402  (a policy that logs the aborts it is told of)


def fast_devices():
    return batchlab.affine_devices(1, fixed=0.002, per_token=1e-5, per_context_token=0.0)


def serve(test, policy=None):
    """Run `test(client, base_url, server)` against a fresh front."""
    async def main():
        server = Server(policy or batchlab.load_policy("continuous"), fast_devices())
        async with running(create_app(server, model="tiny")) as url:
            async with httpx.AsyncClient(base_url=url, timeout=10, trust_env=False) as client:
                return await test(client, url, server)
    return asyncio.run(asyncio.wait_for(main(), 30))


def sse(text: str) -> list:
    events = [line[6:] for line in text.split("\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def test_models_and_a_plain_completion():
    async def test(client, url, server):
        models = (await client.get("/v1/models")).json()
        assert [m["id"] for m in models["data"]] == ["tiny"]
        r = await client.post("/v1/completions", json={
            "model": "tiny", "prompt": [5, 6, 7, 8], "max_tokens": 7, "temperature": 0,
            "return_token_ids": True})
        assert r.status_code == 200, r.text
        body = r.json()
        choice = body["choices"][0]
        assert choice["finish_reason"] == "length" and len(choice["text"]) == 7
        assert len(choice["token_ids"]) == 7 and choice["prompt_token_ids"] == [5, 6, 7, 8]
        assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 7,
                                 "total_tokens": 11}
        rec = server.result().records
        assert rec["status"].tolist() == [FINISHED] and rec["output_tokens"].tolist() == [7]
    serve(test)


def test_streaming_sends_one_event_per_token_then_usage_and_done():
    async def test(client, url, server):
        r = await client.post("/v1/completions", json={
            "prompt": "héllo", "max_tokens": 5, "stream": True,
            "stream_options": {"include_usage": True}})
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse(r.text)
        tokens = [e for e in events if e["choices"] and e["choices"][0]["text"]]
        assert len(tokens) == 5
        assert events[-2]["choices"][0]["finish_reason"] == "length"
        # "héllo" is 6 UTF-8 bytes: 6 prompt tokens under the byte tokenizer.
        assert events[-1]["usage"] == {"prompt_tokens": 6, "completion_tokens": 5,
                                       "total_tokens": 11}
    serve(test)


@pytest.mark.parametrize("body, culprit", [
    ({"prompt": [1], "max_tokens": 2, "temprature": 0.5}, "'temprature'"),
    ({"prompt": [1], "n": 2}, "n=2"),
    ({"prompt": [1], "max_tokens": 0}, "max_tokens must be an int >= 1"),
    ({"prompt": [1], "model": "gpt-4"}, "model 'gpt-4' is not served"),
    ({"prompt": [[1], [2]]}, "holds 2 prompts"),
    ({"prompt": [1, -3]}, "token ids must be in"),
    ({"prompt": []}, "prompt must be"),
])
def test_bad_requests_name_the_field(body, culprit):
    async def test(client, url, server):
        r = await client.post("/v1/completions", json=body)
        assert r.status_code == 400
        assert culprit in r.json()["error"]["message"]
        r = await client.post("/v1/completions", content=b"{not json")
        assert r.status_code == 400 and "not JSON" in r.json()["error"]["message"]
        assert server.result().records.size == 0   # nothing reached the policy
    serve(test)


def test_client_that_leaves_mid_stream_aborts_its_request():
    spy = Spy(batchlab.load_policy("continuous"))

    async def test(client, url, server):
        async with client.stream("POST", "/v1/completions", json={
                "prompt": [1, 2, 3], "max_tokens": 5000, "stream": True}) as r:
            seen = 0
            async for line in r.aiter_lines():
                seen += line.startswith("data: ")
                if seen == 3:
                    break
        for _ in range(200):   # the server notices the disconnect shortly after
            if spy.aborted:
                break
            await asyncio.sleep(0.02)
        rec = server.result().records
        assert spy.aborted == [0]
        assert rec["status"].tolist() == [ABORTED] and 3 <= rec["output_tokens"][0] < 5000
    serve(test, spy)


def test_parse_completion_accepts_habitual_sampling_fields():
    s = parse_completion({"prompt": [[4, 5]], "max_tokens": 3, "temperature": 0.7,
                          "top_p": 1, "seed": 1, "ignore_eos": True, "logprobs": None,
                          "stream_options": {"include_usage": True}, "stream": True}, "m")
    assert s["ids"] == [4, 5] and s["max_tokens"] == 3 and s["include_usage"]
