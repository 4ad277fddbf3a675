"""Baseline 2 (docs/BENCHMARKS.md): the Pontotel docs' (seeds/000) `PontotelAuth` class,
verbatim, in a long-lived process that refreshes in a loop and writes the token to a file
as a user would (open/write, no fsync).

Usage: pontotel_auth.py BASE_URL OUT_FILE N. Logs in once, prints `ready` and waits for a
line on stdin (the benchmark samples /proc), refreshes N times back to back, prints
`done` and waits for another line before it exits."""
import sys

import requests
from datetime import datetime, timedelta


class PontotelAuth:
    def __init__(self, username, password, base_url):
        self.username = username
        self.password = password
        self.base_url = base_url
        self.token = None
        self.token_expires_at = None

    def login(self):
        """Realiza login e obtém token"""
        url = f"{self.base_url}/login/"
        payload = {"username": self.username, "password": self.password}
        response = requests.post(url, json=payload)
        response.raise_for_status()
        data = response.json()
        self.token = data["access_token"]
        self.token_expires_at = datetime.now() + timedelta(seconds=data["expires_in"])
        return self.token

    def get_token(self):
        """Retorna token válido, renovando se necessário"""
        if not self.token or datetime.now() >= self.token_expires_at:
            self.login()
        return self.token


def write(path, token):
    with open(path, "w") as f:
        f.write(token + "\n")


def main():
    base_url, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    auth = PontotelAuth("demo", "demo-password", base_url)
    write(out, auth.get_token())
    print("ready", flush=True)
    sys.stdin.readline()
    for _ in range(n):
        # The token is due: what the class's own check sees when the loop wakes up at
        # expiry. Back to back, so the measurement holds refresh work only.
        auth.token_expires_at = datetime.now()
        write(out, auth.get_token())
    print("done", flush=True)
    sys.stdin.readline()


if __name__ == "__main__":
    main()
