"""The application service: every action a clinician or an admin takes, with its checks."""
