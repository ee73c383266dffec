"""Talks to a running grok2api with the official OpenAI Python SDK, streaming and not.

Run by tests/openai_sdk.rs with GATEWAY_URL and API_KEY set; exits non-zero on the first failed check.
"""
import os
import sys

import openai

client = openai.OpenAI(base_url=os.environ["GATEWAY_URL"] + "/v1", api_key=os.environ["API_KEY"], max_retries=0)

resp = client.chat.completions.create(model="grok-4-fast", messages=[{"role": "user", "content": "hello sdk"}])
assert resp.choices[0].message.content == "echo: hello sdk", resp
assert resp.usage is not None and resp.usage.total_tokens > 0, resp

pieces = []
stream = client.chat.completions.create(
    model="grok-4-fast",
    messages=[{"role": "user", "content": "stream please"}],
    stream=True,
    extra_body={"mock": {"chunks": 6}},
)
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        pieces.append(chunk.choices[0].delta.content)
assert len(pieces) == 6, pieces

models = [m.id for m in client.models.list()]
assert "grok-4-fast" in models, models

images = client.images.generate(model="grok-2-image", prompt="a lighthouse", n=1)
assert images.data[0].url.startswith("http"), images

bad = openai.OpenAI(base_url=os.environ["GATEWAY_URL"] + "/v1", api_key="sk-wrong", max_retries=0)
try:
    bad.chat.completions.create(model="grok-4-fast", messages=[{"role": "user", "content": "x"}])
    sys.exit("a wrong API key was accepted")
except openai.AuthenticationError as e:
    assert e.status_code == 401

print("openai sdk: ok")
