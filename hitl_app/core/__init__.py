"""Shared foundations: settings, errors, durable files, the chat prompt and the console."""
