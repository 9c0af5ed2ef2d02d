"""gis-ioc keys: API keys and their roles."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from gis_ioc.cli.common import _engine, _settings, err_console, out

keys_app = typer.Typer(help="API keys: viewer, operator, admin.", no_args_is_help=True)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="Who or what uses the key, e.g. 'operator-desk-1'.")],
    role: Annotated[str, typer.Option(help="viewer, operator or admin.")] = "operator",
) -> None:
    """Create a key and print it once (only its hash is stored)."""
    from gis_ioc import auth

    key = auth.create_key(_engine(_settings()), name, role)
    out.print(key, highlight=False, soft_wrap=True)
    err_console.print(f"gis-ioc: key {name!r} ({role}) created; it is shown only now. "
                      "Send it as 'Authorization: Bearer KEY'.")


@keys_app.command("list")
def keys_list() -> None:
    """The keys: name, role, prefix, when created, last used, revoked."""
    from gis_ioc import auth

    table = Table()
    for col in ("name", "role", "prefix", "created", "last used", "revoked"):
        table.add_column(col)
    for k in auth.list_keys(_engine(_settings())):
        table.add_row(k["name"], k["role"], k["key_prefix"] + "…", f"{k['created_at']:%Y-%m-%d %H:%M}",
                      f"{k['last_used_at']:%Y-%m-%d %H:%M}" if k["last_used_at"] else "",
                      f"{k['revoked_at']:%Y-%m-%d %H:%M}" if k["revoked_at"] else "")
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(name: Annotated[str, typer.Argument(help="Name of the key.")]) -> None:
    """Revoke a key: it stops working at once."""
    from gis_ioc import auth

    auth.revoke_key(_engine(_settings()), name)
    out.print(f"key {name!r} revoked")
