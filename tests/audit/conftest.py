"""The audit tests use the audit store fixtures of ``tests/consumers``."""

from tests.consumers.conftest import audit_db, audit_store, store_records

__all__ = ["audit_db", "audit_store", "store_records"]
