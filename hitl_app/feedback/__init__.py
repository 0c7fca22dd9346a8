"""Clinicians' judgements: the records, the append-only store, the ledger and the training rows built from it."""
