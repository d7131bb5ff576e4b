"""Point the support-bot mix at any ttsd deployment:

    pip install locust
    locust -f bench/locustfile.py --host http://127.0.0.1:8000 --users 400 --spawn-rate 50 --headless -t 2m

Each user speaks like a voice bot: mostly repeated phrases (Zipf over 300), one request after
another with a short pause, as `POST /v1/audio/speech` (set TTSD_BENCH_API_KEY for keyed servers).
"""

from __future__ import annotations

import os
import random

from locust import HttpUser, between, events, task  # type: ignore[import-not-found]

from bench.workload import phrases

PHRASES = phrases(300)
WEIGHTS = [1.0 / (rank + 1) for rank in range(len(PHRASES))]


@events.init_command_line_parser.add_listener
def _defaults(parser):  # type: ignore[no-untyped-def]
    parser.set_defaults(num_users=400)


class SupportBot(HttpUser):
    wait_time = between(0.5, 2.0)

    def on_start(self) -> None:
        key = os.environ.get("TTSD_BENCH_API_KEY")
        if key:
            self.client.headers["Authorization"] = f"Bearer {key}"
        self.voice = os.environ.get("TTSD_BENCH_VOICE", "en-joe")

    @task
    def speak(self) -> None:
        text = random.choices(PHRASES, weights=WEIGHTS, k=1)[0]
        body = {"model": "tts-1", "input": text, "voice": self.voice, "response_format": "mp3"}
        with self.client.post("/v1/audio/speech", json=body, name="speech", catch_response=True) as response:
            if response.status_code in (429, 503):
                # Shed load: the service working as designed, but reported so it is seen.
                response.failure(
                    f"shed {response.status_code}, retry after {response.headers.get('retry-after')} s"
                )
            elif response.status_code != 200 or not response.content:
                response.failure(f"{response.status_code}: {response.text[:200]}")
