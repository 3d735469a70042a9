"""`steeropt serve`: an OpenAI-compatible chat-completions endpoint that applies a steering profile per request.

    steeropt serve profiles/quickstart --port 8000
    client = openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="none")
    client.chat.completions.create(model="steeropt", messages=[...], extra_body={"family": "advice"})

batcher.py collects concurrent requests for a few milliseconds and generates them in one `generate` call with
one strength per row; app.py parses and checks requests (4xx with a message) and shapes the answers.
"""
from steeropt.serve.app import create_app, run

__all__ = ["create_app", "run"]
