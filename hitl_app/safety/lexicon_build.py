"""Write the English lexicon that name detection reads (``hitl_app/data/lexicon/``) from SCOWL.

SCOWL (Spell Checker Oriented Word Lists, Kevin Atkinson; permissive licence, kept beside the
lists as ``SCOWL-LICENSE``) sorts English words by how common they are, in levels 10 to 95, and
keeps capitalised words (people's names, places, brands, days) apart from the rest. Two lists
are written, one word a line, sorted:

- ``common.txt``: lower-case words up to level 60, the words of ordinary prose;
- ``rare.txt``: the other lower-case words up to level 80, where rarer and technical words
  (lymphadenopathy, dexamethasone) sit; past 80 the lists hold lower-cased names;
- ``capitalised.txt``: proper names and other capitalised words up to level 80, possessives
  dropped.

Every spelling (American, British, Canadian, Australian and their variants) is included.

Run it once where Debian's ``scowl`` package is installed (``apt-get install scowl``)::

    python -m hitl_app.safety.lexicon_build

The app only reads the written lists, so nothing is downloaded or installed at run time.
"""

from __future__ import annotations

import argparse
import gzip
import logging
import shutil
from pathlib import Path

from ..core.shipped import shipped_file

log = logging.getLogger(__name__)

SCOWL_DIR = Path("/usr/share/dict/scowl")
SCOWL_LICENCE = Path("/usr/share/doc/scowl/copyright")
LEXICON_DIR = shipped_file("lexicon")
COMMON_LEVELS = (10, 20, 35, 40, 50, 55, 60)
RARE_LEVELS = (70, 80)


def _words(scowl: Path, kinds: tuple[str, ...], levels: tuple[int, ...]) -> set[str]:
    """Every word of SCOWL's lists of these kinds and levels, in every spelling variant."""
    words: set[str] = set()
    for kind in kinds:
        for level in levels:
            for path in scowl.glob(f"*-{kind}.{level}"):
                words.update(path.read_text(encoding="utf-8", errors="replace").split())
    return words


def _lower(words: set[str]) -> set[str]:
    return {w for w in words if w.isalpha() and w.islower()}


def build(scowl: Path = SCOWL_DIR, out: Path = LEXICON_DIR) -> dict[str, int]:
    """Write ``common.txt.gz``, ``rare.txt.gz`` and ``capitalised.txt.gz`` under ``out``; return their sizes in words."""
    if not scowl.is_dir():
        raise FileNotFoundError(f"{scowl} is missing: install Debian's scowl package (apt-get install scowl)")
    common = _lower(_words(scowl, ("words",), COMMON_LEVELS))
    rare = _lower(_words(scowl, ("words",), RARE_LEVELS)) - common
    proper = {w.removesuffix("'s") for w in _words(scowl, ("proper-names", "upper"), COMMON_LEVELS + RARE_LEVELS)}
    capitalised = {w for w in proper if w[:1].isupper() and not w.isupper()}
    out.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for name, words in (("common", common), ("rare", rare), ("capitalised", capitalised)):
        # mtime=0 keeps the written file the same byte for byte when the words are.
        with gzip.GzipFile(out / f"{name}.txt.gz", "wb", mtime=0) as f:
            f.write("\n".join(sorted(words)).encode("utf-8") + b"\n")
        sizes[name] = len(words)
    if SCOWL_LICENCE.is_file():
        shutil.copyfile(SCOWL_LICENCE, out / "SCOWL-LICENSE")
    log.info("wrote %s to %s", sizes, out)
    return sizes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scowl", type=Path, default=SCOWL_DIR, help="SCOWL's final lists (Debian: %(default)s)")
    parser.add_argument("--out", type=Path, default=LEXICON_DIR)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    build(args.scowl, args.out)


if __name__ == "__main__":
    main()
