"""The chat messages a model sees for a question: the one place they are built.

Serving, training rows, evaluation, the red-team scoring and the clinical-text judge all build
the prompt here, so a question is put to the model the same way everywhere.
"""

from __future__ import annotations

Message = dict[str, str]


def chat_prompt(question: str, system_prompt: str | None) -> list[Message]:
    """The system prompt (if any), then the user's question."""
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*system, {"role": "user", "content": question}]
