"""One training round (SFT, then preference optimisation) and the trainer process that runs rounds."""
