"""`steeropt serve`: an OpenAI-compatible chat-completions endpoint that applies a steering profile per request.

    steeropt serve profiles/quickstart --port 8000
    client = openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="none")
    client.chat.completions.create(model="steeropt", messages=[...], extra_body={"family": "advice"})

batcher.py collects concurrent requests for a few milliseconds and generates them in one `generate` call with
one strength per row (bounded queue, per-row stop, cancellation); requests.py parses and checks a request (4xx
with a message) and bounds the `steer` override; stream.py shapes the answers (JSON or server-sent events);
app.py is the HTTP side (API key, content type, body size, time limit, error handling).
"""
from steeropt.serve.app import create_app, run

__all__ = ["create_app", "run"]
