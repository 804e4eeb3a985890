"""Locust load for ``bench/serving.py``: POST /v1/recall for random users with history, each
simulated client at ``BENCH_USER_RPS`` requests/s on average, with exponential pauses (Poisson
arrivals). ``constant_throughput`` clients were measured firing in lockstep here: bursts of
every client within a few milliseconds, then nothing for the rest of the period, so each burst
queued at the server and latency grew with the client count at the same total rate."""

import json
import os
import random

from locust import FastHttpUser, task

USERS = int(os.environ.get("BENCH_USERS", "2000"))
K = int(os.environ.get("BENCH_K", "200"))
USER_RPS = float(os.environ.get("BENCH_USER_RPS", "5"))
JSON = {"Content-Type": "application/json"}


class RecallClient(FastHttpUser):
    def wait_time(self) -> float:
        return random.expovariate(USER_RPS)

    @task
    def recall(self) -> None:
        # As bytes: geventhttpclient then sends the headers and the body in one write (strace).
        body = json.dumps({"user_id": f"u{random.randrange(USERS)}", "k": K}).encode()
        with self.client.post(
            "/v1/recall", data=body, headers=JSON, name="recall", catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")
