"""``broker``: serve, migrate, manage keys, grant bootstrap admins, and switch providers."""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Mapping

import structlog
from shared.config_file import ConfigError
from shared.logging import configure_logging
from shared.settings import Settings, is_loopback_host, load_settings

log = structlog.get_logger("broker.cli")

# On SIGTERM uvicorn stops accepting connections and lets the requests in flight finish for up to
# this long before cancelling them, then exits: a rolling deploy loses no answer (a refresh that
# rotated but never answered leaves its client to retry). The broker Deployment's
# terminationGracePeriodSeconds covers its preStop sleep plus this (test_shutdown_budget.py).
GRACEFUL_SHUTDOWN_SECONDS = 20


def _settings(environ: Mapping[str, str]) -> Settings:
    try:
        return load_settings(environ)
    except ConfigError as exc:
        print(f"broker: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _warn_about_development_settings(settings: Settings) -> None:
    if settings.keyring_is_generated:
        log.warning(
            "config.development_keyring",
            detail=f"BROKER_ENCRYPTION_KEYS is unset; using the development keyring under "
            f"{settings.var_dir}/ (never do this in production)",
        )
    for provider in settings.providers:
        if provider.type == "dev" and not provider.disabled:
            log.warning(
                "config.dev_provider_enabled",
                provider=provider.id,
                detail="anyone can sign in as any email through this provider",
            )


def refuse_dev_provider_on_public_bind(settings: Settings, host: str) -> None:
    """docs/security.md "The dev provider": it signs anyone in as any address, so it listens on
    loopback only, whatever the issuer says, unless BROKER_INSECURE_DEV=1."""
    if settings.insecure_dev or is_loopback_host(host):
        return
    dev = [p.id for p in settings.providers if p.type == "dev" and not p.disabled]
    if dev:
        print(
            f"broker: configuration error: the dev provider {dev[0]!r} signs anyone in as any "
            f"email address; it is refused on the non-loopback listen address {host!r} "
            "(listen on 127.0.0.1, disable the provider, or set BROKER_INSECURE_DEV=1)",
            file=sys.stderr,
        )
        raise SystemExit(2)


def migrate(settings: Settings) -> None:
    # Imported here: alembic is most of the CLI's start-up time, and only migrating needs it.
    from shared.db.migrate import upgrade_to_head

    if settings.database_url.startswith("sqlite"):
        settings.var_dir.mkdir(parents=True, exist_ok=True)
    upgrade_to_head(settings.database_url)
    log.info("database.migrated")


def serve(settings: Settings, host: str, port: int, migrate_first: bool) -> None:
    import uvicorn
    from shared.runtime import build_runtime
    from shared.tracing.install import BROKER_SERVICE, install_tracing

    from broker.app import create_app

    if migrate_first:
        migrate(settings)
    _warn_about_development_settings(settings)
    tracer_provider = install_tracing(settings, service_name=BROKER_SERVICE)
    app = create_app(build_runtime(settings, tracer_provider=tracer_provider))
    print(
        f"\n  OIDC broker on {settings.issuer}\n"
        f"  discovery: {settings.issuer}/.well-known/openid-configuration\n"
        f"  JWKS:      {settings.issuer}/.well-known/jwks.json\n"
        f"  README.md shows how to get a token pair with the dev provider.\n",
        file=sys.stderr,
    )
    # What startup built (modules, settings, the app) lives as long as the process: keep it
    # out of the collector's generations, so a full collection scans only what requests leave
    # behind (without this, full collections paused the loop ~90 ms under the refresh bench).
    gc.collect()
    gc.freeze()
    # access_log off: uvicorn would log query strings, which carry codes and states.
    uvicorn.run(
        app,
        host=host,
        port=port,
        access_log=False,
        log_config=None,
        proxy_headers=True,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> None:
    environ = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(prog="broker", description="OIDC identity broker")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the HTTP server")
    serve_cmd.add_argument("--host", default=environ.get("BROKER_HOST", "127.0.0.1"))
    serve_cmd.add_argument("--port", type=int, default=int(environ.get("BROKER_PORT", "8000")))
    serve_cmd.add_argument("--migrate", action="store_true", help="apply migrations first")
    commands.add_parser("migrate", help="apply database migrations (alembic upgrade head)")
    keys_cmd = commands.add_parser("keys", help="signing keys and the encryption keyring")
    key_commands = keys_cmd.add_subparsers(dest="key_command", required=True)
    key_commands.add_parser("list", help="list the signing keys and their states")
    key_commands.add_parser(
        "rotate", help="publish a new key per algorithm now; it signs after one JWKS max-age"
    )
    revoke_cmd = key_commands.add_parser(
        "revoke", help="revoke a compromised key: out of JWKS at once, its tokens refused"
    )
    revoke_cmd.add_argument("kid")
    key_commands.add_parser(
        "rotate-encryption",
        help="re-encrypt stored upstream tokens and private keys under the first keyring key",
    )
    admins_cmd = commands.add_parser(
        "admins", help="admins granted in the database (beside admins: in the configuration)"
    )
    admin_commands = admins_cmd.add_subparsers(dest="admin_command", required=True)
    for name, help_text in (
        ("grant", "make USER an admin"),
        ("revoke", "remove USER's admin grant (admins: in the configuration stays)"),
    ):
        admin_cmd = admin_commands.add_parser(name, help=help_text)
        admin_cmd.add_argument(
            "user",
            metavar="USER",
            help="a broker user id (user:<id> also works) or provider:subject of a linked "
            "profile; never an email",
        )
    admin_commands.add_parser("list", help="list the admins: granted ones and configured ones")
    providers_cmd = commands.add_parser(
        "providers", help="switch a provider off or on at runtime (over the configuration)"
    )
    provider_commands = providers_cmd.add_subparsers(dest="provider_command", required=True)
    provider_commands.add_parser("list", help="each provider: enabled or not, and what decided")
    for name, help_text in (
        ("disable", "stop sign-ins, links and upstream refreshes through PROVIDER"),
        ("enable", "let PROVIDER sign people in again"),
        ("reset", "drop the runtime switch: the configuration decides again"),
    ):
        provider_cmd = provider_commands.add_parser(name, help=help_text)
        provider_cmd.add_argument("provider", metavar="PROVIDER", help="the provider's id")
        provider_cmd.add_argument("--reason", help="why, for the audit log (one line)")
        if name == "disable":
            provider_cmd.add_argument(
                "--revoke-sessions",
                action="store_true",
                help="also end every live session signed in through PROVIDER",
            )
    args = parser.parse_args(argv)

    settings = _settings(environ)
    configure_logging(settings.log_level, settings.log_format, trace_ids=settings.tracing)
    if args.command == "migrate":
        migrate(settings)
    elif args.command == "serve":
        refuse_dev_provider_on_public_bind(settings, args.host)
        serve(settings, args.host, args.port, args.migrate)
    elif args.command == "keys":
        from broker.cli.keys import run_key_command

        raise SystemExit(run_key_command(settings, args.key_command, getattr(args, "kid", None)))
    elif args.command == "admins":
        from broker.cli.admins import run_admin_command

        raise SystemExit(
            run_admin_command(settings, args.admin_command, getattr(args, "user", None))
        )
    elif args.command == "providers":
        from broker.cli.providers import run_provider_command

        raise SystemExit(
            run_provider_command(
                settings,
                args.provider_command,
                getattr(args, "provider", None),
                reason=getattr(args, "reason", None),
                revoke_sessions=getattr(args, "revoke_sessions", False),
            )
        )
