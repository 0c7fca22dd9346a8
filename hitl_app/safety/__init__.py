"""Guardrails: the input guard, answer checks, dose and drug tables, and PHI redaction."""
