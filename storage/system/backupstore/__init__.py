"""Backups of volumes to object storage (S3, GCS, Azure Blob) as content-addressed, compressed chunks.

See docs/semantics.md, "Backup engine (BK)". The public names are the ones SPEC14 fixes for every caller
(provisioners/backup.py, the node agent, the CLI)."""
from .engine import (
                     BackupStats,
                     ChunkRef,
                     CorruptBackup,
                     Manifest,
                     backup_block,
                     backup_tree,
                     backup_url,
                     delete_backup,
                     list_backups,
                     parse_backup_url,
                     read_manifest,
                     restore_block,
                     restore_tree,
)
from .stores import ObjectStore, open_store, parse_store_url

__all__ = ["BackupStats", "ChunkRef", "CorruptBackup", "Manifest", "ObjectStore", "backup_block", "backup_tree",
           "backup_url", "delete_backup", "list_backups", "open_store", "parse_backup_url", "parse_store_url",
           "read_manifest", "restore_block", "restore_tree"]
