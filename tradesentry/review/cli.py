"""``tradesentry review ...``: serve the app, manage users, write a demo snapshot.

The project CLI (tradesentry/cli.py) grafts the ``review`` command into its argparse tree with
``register(subparsers)``, which sets ``func(args, settings)`` on the parsed namespace; ``main(argv)``
takes the arguments after ``review``. Also runnable as ``python -m tradesentry.review.cli``.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from tradesentry.settings import Settings, get_settings


def serve(
    settings: Settings | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    secure_cookies: bool = False,
    log_level: str = "info",
) -> None:
    """Serve the review app (local sign-in) over the published snapshot. Binds to 127.0.0.1 by default."""
    import uvicorn

    from .app import create_app

    settings = settings or get_settings()
    app = create_app(settings, auth_mode="local", secure_cookies=secure_cookies)
    store = app.state.review.store
    if store.count_users() == 0:
        print(
            "No users yet: create the first admin with\n  tradesentry review create-user NAME --role admin",
            file=sys.stderr,
        )
    print(
        f"Tradesentry review on http://{host}:{port}/  (snapshot: {settings.published}/CURRENT, "
        f"decisions: {_safe_url(settings.review_db)})",
        file=sys.stderr,
    )
    uvicorn.run(app, host=host, port=port, log_level=log_level, proxy_headers=False)


def create_user(
    name: str,
    *,
    role: str,
    countries: str | list[str] = "",
    password: str | None = None,
    display_name: str | None = None,
    airflow_only: bool = False,
    settings: Settings | None = None,
) -> None:
    """Create a user in the review store. ``airflow_only``: no password, signs in through Airflow."""
    from .auth import hash_password
    from .store import Store

    settings = settings or get_settings()
    if not airflow_only and not password:
        raise ValueError("a password is needed (or airflow_only=True)")
    store = Store(settings.review_db)
    try:
        store.upgrade()
        store.create_user(
            name,
            role=role,
            countries=countries,
            password_hash=hash_password(password) if password else None,
            display_name=display_name,
        )
    finally:
        store.dispose()


def set_password(name: str, password: str, *, settings: Settings | None = None) -> None:
    from .auth import hash_password
    from .store import Store

    store = Store((settings or get_settings()).review_db)
    try:
        store.upgrade()
        store.update_user(name, password_hash=hash_password(password))
    finally:
        store.dispose()


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        pw = sys.stdin.readline().rstrip("\r\n")
        if not pw:
            raise SystemExit("no password on stdin")
        return pw
    if not sys.stdin.isatty():
        raise SystemExit("no terminal to ask the password: use --password-stdin")
    pw = getpass.getpass("Password: ")
    if pw != getpass.getpass("Repeat: "):
        raise SystemExit("the passwords differ")
    return pw


def _safe_url(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(url)"


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``review`` with its subcommands to the project CLI's argparse ``subparsers``.

    Sets ``func(args, settings)`` on the namespace, as tradesentry/cli.py calls it.
    """
    p = subparsers.add_parser("review", help="the analysts' review app (serve, create-user, ...)")
    _fill(p)
    p.set_defaults(func=_dispatch)
    return p


add_parser = register


def _dispatch(args: argparse.Namespace, settings: Settings | None = None) -> int:
    return int(args.review_func(args, settings) or 0)


def _fill(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="review_command", required=True)
    s = sub.add_parser("serve", help="serve the review app over the published snapshot")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8765)
    s.add_argument("--secure-cookies", action="store_true", help="mark cookies Secure (behind HTTPS)")
    s.set_defaults(review_func=_cmd_serve)
    c = sub.add_parser("create-user", help="create a user (the first admin too); no default password exists")
    c.add_argument("name")
    c.add_argument("--role", required=True, choices=["analyst", "lead", "admin"])
    c.add_argument("--countries", default="", help="comma-separated, e.g. XA,XB (needed for analysts)")
    c.add_argument("--display-name")
    g = c.add_mutually_exclusive_group()
    g.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    g.add_argument("--airflow-only", action="store_true", help="no password: signs in through Airflow only")
    c.set_defaults(review_func=_cmd_create_user)
    pw = sub.add_parser("set-password", help="set a user's password")
    pw.add_argument("name")
    pw.add_argument("--password-stdin", action="store_true")
    pw.set_defaults(review_func=_cmd_set_password)
    d = sub.add_parser("demo-snapshot", help="publish a small synthetic snapshot (for demos and tests)")
    d.add_argument("--night", required=True)
    d.set_defaults(review_func=_cmd_demo)


def _cmd_serve(args: argparse.Namespace, settings: Settings | None = None) -> int:
    serve(settings, host=args.host, port=args.port, secure_cookies=args.secure_cookies)
    return 0


def _cmd_create_user(args: argparse.Namespace, settings: Settings | None = None) -> int:
    from .store import StoreError

    password = None if args.airflow_only else _read_password(args.password_stdin)
    try:
        create_user(
            args.name,
            role=args.role,
            countries=args.countries,
            password=password,
            display_name=args.display_name,
            airflow_only=args.airflow_only,
        )
    except (StoreError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"created {args.role} {args.name}")
    return 0


def _cmd_set_password(args: argparse.Namespace, settings: Settings | None = None) -> int:
    from .store import StoreError

    try:
        set_password(args.name, _read_password(args.password_stdin), settings=settings)
    except (StoreError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"password of {args.name} set")
    return 0


def _cmd_demo(args: argparse.Namespace, settings: Settings | None = None) -> int:
    from .demo_snapshot import write_demo_snapshot

    path = write_demo_snapshot((settings or get_settings()).published, args.night)
    print(f"published {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``tradesentry review <command> ...``: pass the arguments after ``review``."""
    p = argparse.ArgumentParser(prog="tradesentry review")
    _fill(p)
    args = p.parse_args(argv)
    return _dispatch(args, get_settings())


if __name__ == "__main__":
    raise SystemExit(main())
