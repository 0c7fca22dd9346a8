"""The Gradio interface: one module per tab, plus the HTTP API."""
