"""Human-in-the-loop alignment of a medical language model with clinicians' judgement."""

__version__ = "0.1.0"
