"""Baselines 2 and 3 (docs/BENCHMARKS.md): the Pontotel docs' (seeds/000) `PontotelAuth`
class, verbatim, in a long-lived process that refreshes in a loop and writes the token to a
file, either as a user would (`plain`: open/write, no fsync) or as tokend does (`atomic`:
temporary file, fsync, rename, fsync of the directory), so tokend is also compared with a
loop that pays for the same durability.

Usage: pontotel_auth.py BASE_URL OUT_FILE N [plain|atomic]. Logs in once, prints `ready`
and waits for a line on stdin (the benchmark samples /proc), refreshes N times back to
back, prints `done` and waits for another line before it exits."""
import os
import sys
import tempfile

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


def write_plain(path, token):
    with open(path, "w") as f:
        f.write(token + "\n")


def write_atomic(path, token):
    """What a careful user writes: a reader sees the old token or the new one, never a
    torn file, and the new one survives a power loss once this returns."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".token-")
    try:
        os.write(fd, (token + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def main():
    base_url, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    mode = sys.argv[4] if len(sys.argv) > 4 else "plain"
    if mode not in ("plain", "atomic"):
        sys.exit(f"unknown write mode {mode!r}: plain or atomic")
    write = write_atomic if mode == "atomic" else write_plain
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
