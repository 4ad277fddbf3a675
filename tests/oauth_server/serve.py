"""Runs django-oauth-toolkit as a real OAuth2 authorization server on 127.0.0.1.

Called by tests/support/oauth_server.rs. Creates a fresh SQLite DB in --data-dir, the
users and clients given on the command line, then serves DOT with waitress (a
production WSGI server). Once listening, it writes the bound port to DATA_DIR/port
(so --port 0 avoids port races). Stop it by killing the process.

    serve.py --data-dir D --access-lifetime 2 --user alice:pw \
        --client svc:svc-secret:client-credentials --client app:app-secret:password
"""

import argparse
import os
import sys
import time


def split_pair(text, what):
    """'a:b' -> ('a', 'b'), splitting at the first colon."""
    name, sep, secret = text.partition(":")
    if not sep or not name:
        sys.exit(f"{what}: expected NAME:SECRET, got {text!r}")
    return name, secret


def main():
    started = time.monotonic()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, help="holds the SQLite DB and the port file")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--access-lifetime", type=int, required=True, help="seconds")
    p.add_argument("--reuse-protection", action="store_true", help="replay revokes the family")
    p.add_argument("--user", action="append", default=[], help="NAME:PASSWORD")
    p.add_argument(
        "--client", action="append", default=[], help="ID:SECRET:GRANT (client-credentials|password)"
    )
    args = p.parse_args()

    # settings.py reads these; they must be set before django.setup().
    os.environ["TOKEND_OAUTH_DB"] = os.path.join(args.data_dir, "db.sqlite3")
    os.environ["TOKEND_OAUTH_ACCESS_LIFETIME"] = str(args.access_lifetime)
    if args.reuse_protection:
        os.environ["TOKEND_OAUTH_REUSE_PROTECTION"] = "1"
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    os.environ["DJANGO_SETTINGS_MODULE"] = "settings"

    try:
        import django
        from django.core.management import call_command
    except ImportError as e:
        sys.exit(f"{e}: run scripts/install-test-deps to install django-oauth-toolkit")

    django.setup()
    call_command("migrate", verbosity=0, interactive=False, run_syncdb=True)

    from django.contrib.auth.models import User
    from oauth2_provider.models import Application

    for spec in args.user:
        name, password = split_pair(spec, "--user")
        User.objects.create_user(username=name, password=password)
    for spec in args.client:
        client_id, rest = split_pair(spec, "--client")
        secret, _, grant = rest.rpartition(":")
        grant = grant.replace("_", "-")  # DOT spells it client-credentials
        # A DOT application allows exactly one grant (plus refresh_token), hence one
        # client per grant. The secret is hashed on save, like a real deployment.
        Application.objects.create(
            name=client_id,
            client_id=client_id,
            client_secret=secret,
            client_type=Application.CLIENT_CONFIDENTIAL,
            authorization_grant_type=grant,
        )

    from django.core.wsgi import get_wsgi_application
    from waitress import create_server

    server = create_server(get_wsgi_application(), host="127.0.0.1", port=args.port)
    port = server.effective_port
    # Written only once the socket listens; rename makes it appear complete.
    tmp = os.path.join(args.data_dir, "port.tmp")
    with open(tmp, "w") as f:
        f.write(f"{port}\n")
    os.rename(tmp, os.path.join(args.data_dir, "port"))
    elapsed = time.monotonic() - started
    print(f"oauth server ready on http://127.0.0.1:{port}/o/token/ in {elapsed:.2f}s", flush=True)
    server.run()


if __name__ == "__main__":
    main()
