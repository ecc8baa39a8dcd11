"""``stowage backup``, ``restore`` and ``rotate-secrets``: maintenance of the store itself."""
from __future__ import annotations

from pathlib import Path

import click

from storage.cli.errors import CommandError
from storage.cli.up import default_data_dir, lock_data_dir, open_data_store

_data_dir = click.option("--data-dir", default=default_data_dir, show_default="~/.stowage or $STOWAGE_DATA_DIR",
                         help="The data dir of `stowage up`/`serve`.")
_store = click.option("--store", "store_url", default=None,
                      help="Store URL, as given to `up`/`serve` (default: SQLite in the data dir).")
_encryption = click.option("--encryption-provider-config", "encryption_config", default=None, metavar="FILE",
                           help="EncryptionConfiguration (default: <data-dir>/encryption-config.yaml).")


def _url(data_dir: Path, store_url: str | None) -> str:
    from storage.cli.up import DB_FILE

    return store_url or str(data_dir / DB_FILE)


@click.command("backup")
@click.argument("file")
@_data_dir
@_store
def backup_command(file: str, data_dir: str, store_url: str | None) -> None:
    """Write a consistent copy of the store to FILE while Stowage keeps running.

    SQLite: the online backup API. PostgreSQL: pg_dump (custom format).
    Secrets stay encrypted in FILE: keep the data dir's encryption-config.yaml
    with it (but not next to it), or they cannot be read after a restore.
    """
    from storage.store.backup import BackupError, backup

    root = Path(data_dir).expanduser().resolve()
    try:
        target = backup(_url(root, store_url), file)
    except (BackupError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    click.echo(f"backup written to {target}")


@click.command("restore")
@click.argument("file")
@_data_dir
@_store
def restore_command(file: str, data_dir: str, store_url: str | None) -> None:
    """Replace the store's content with the backup FILE (Stowage must be stopped).

    The replaced SQLite file is kept as stowage.db.before-restore-TIME. The
    revision moves past every revision the old database had, so watching
    clients relist (410 Gone) instead of missing what the restore changed.
    """
    from storage.store.backup import BackupError, restore

    root = Path(data_dir).expanduser().resolve()
    if not root.is_dir():
        raise CommandError(f"--data-dir: {root} does not exist")
    lock = lock_data_dir(root, "stowage restore")
    try:
        revision = restore(_url(root, store_url), file)
    except (BackupError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    finally:
        lock.release()
    click.echo(f"restored {Path(file).name}; the store is at revision {revision} (clients relist)")


@click.command("rotate-secrets")
@_data_dir
@_store
@_encryption
def rotate_secrets_command(data_dir: str, store_url: str | None, encryption_config: str | None) -> None:
    """Rewrite every stored Secret with the first key of the encryption configuration.

    Rotation, as in Kubernetes: (1) add the new key as the second key and
    restart every API server; (2) make it the first key and restart again;
    (3) run this command; (4) remove the old key and restart. Secrets stored
    before encryption was on (plaintext) are encrypted by step 3 as well.
    Safe while Stowage runs: objects keep their resourceVersion.
    """
    root = Path(data_dir).expanduser().resolve()
    store = open_data_store(root, store_url, encryption_config)
    try:
        if getattr(store, "corrupt", None):
            raise CommandError(f"the database is corrupt ({store.corrupt}): restore a backup first")
        count = store.rewrite_encrypted()
    finally:
        store.close()
    click.echo(f"rewrote {count} object(s) with the current key")
