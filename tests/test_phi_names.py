"""Names without a cue word: what the name detector takes, and its lexicon. The clinical text that
looks like names and must be kept is with the other kept texts, in ``test_phi.py``."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from hitl_app.safety.lexicon_build import build
from hitl_app.safety.names import find_names, lexicon
from hitl_app.safety.phi import redact

FOUND = [
    pytest.param("Emily Chen was seen in clinic today.", ["Emily", "Chen"], id="sentence-start"),
    pytest.param("Please give ibuprofen to Emily Chen after lunch.", ["Emily", "Chen"], id="after-preposition"),
    pytest.param("Ahmed Hassan's potassium came back at 5.9.", ["Ahmed", "Hassan"], id="possessive"),
    pytest.param("Anna-Marie Okonkwo-Smith has asthma.", ["Anna-Marie", "Okonkwo-Smith"], id="hyphenated"),
    pytest.param("Spoke to Zakhele on the ward.", ["Zakhele"], id="single-unknown-word"),
    pytest.param("Spoke to John on the ward.", ["John"], id="single-known-name-after-spoke-to"),
    pytest.param("Rose Baker was reviewed this morning.", ["Rose", "Baker"], id="names-that-are-words"),
    pytest.param("Ms da Mota-Alves reports a rash.", ["da Mota", "Mota-Alves"], id="leading-particle"),
    pytest.param("Hart, Jane: admitted overnight with a fall.", ["Hart", "Jane"], id="surname-first"),
    pytest.param("K. Németh attended the clinic.", ["K.", "Németh"], id="initial"),
    pytest.param("Reviewed with Cara Mac Ceannabháin, staff nurse.", ["Cara", "Mac", "Ceannabháin"], id="irish-particle"),
    pytest.param("Bloods are due for Alvin Marshall today.", ["Alvin", "Marshall"], id="surname-that-is-a-country"),
    pytest.param("Yasmin Almeida has asthma.", ["Yasmin", "Almeida"], id="given-name-that-is-a-medicine"),
    pytest.param("Letter copied to 山田 裕美子.", ["山田", "裕美子"], id="chinese-characters"),
    pytest.param("Handover: רבקה אלון in bed 4 needs a repeat potassium.", ["רבקה", "אלון"], id="hebrew"),
    pytest.param("The consultant asked Ингрид Сергеевна to stop the ibuprofen.", ["Ингрид"], id="cyrillic"),
]


@pytest.mark.parametrize("text, parts", FOUND)
def test_a_name_without_a_cue_is_redacted(text: str, parts: list[str]) -> None:
    result = redact(text)
    for part in parts:
        assert part not in result.text, f"{part!r} survived in {result.text!r}"
    assert result.counts.get("NAME", 0) >= 1
    assert redact(result.text).text == result.text  # redacting twice changes nothing


def test_a_title_stays_and_a_later_bare_mention_goes() -> None:
    result = redact("Seen by Dr. Bobby Lassen. Emily Chen was seen too; Emily felt better.")
    assert result.text == "Seen by Dr. [NAME]. [NAME] was seen too; [NAME] felt better."
    assert result.counts == {"NAME": 3}


def test_a_possessive_stays_outside_the_span() -> None:
    text = "Ahmed Hassan's potassium came back at 5.9."
    assert [text[a:b] for a, b in find_names(text)] == ["Ahmed Hassan"]


def test_a_text_mostly_in_a_script_without_capitals_is_not_read_for_names() -> None:
    # Another language is not English clinical text: the detector would take every word for a name.
    text = "ما هو العلاج الأول لارتفاع ضغط الدم عند البالغين؟"
    assert find_names(text) == []


def test_the_shipped_lexicon_holds_what_the_detector_leans_on() -> None:
    lex = lexicon()
    assert {"switch", "findings", "rose"} <= lex.common and "emily" not in lex.common
    assert {"Emily", "Chen", "Rose"} <= lex.capitalised
    assert {"lymphadenopathy", "dexamethasone"} <= lex.rare
    assert {"Parkinson", "Graves", "Apgar", "Foley"} <= lex.eponyms
    assert {"apixaban", "lasix", "seretide", "hx", "abdo"} <= lex.clinical
    assert "Thailand" in lex.countries


def _write(path: Path, words: list[str]) -> None:
    path.write_text("\n".join(words) + "\n", encoding="utf-8")


def test_the_lexicon_is_built_from_scowls_lists(tmp_path: Path) -> None:
    scowl = tmp_path / "scowl"
    scowl.mkdir()
    _write(scowl / "english-words.10", ["the", "rose", "Rose", "can't"])
    _write(scowl / "british-words.35", ["oesophagus"])
    _write(scowl / "english-words.70", ["lymphadenopathy", "rose"])
    _write(scowl / "english-words.95", ["emily"])  # past level 80: left out
    _write(scowl / "english-proper-names.50", ["Emily", "Emily's", "AMD", "AMD's"])
    _write(scowl / "english-upper.50", ["Glasgow"])
    out = tmp_path / "lexicon"
    assert build(scowl, out) == {"common": 3, "rare": 1, "capitalised": 2}

    def read(name: str) -> list[str]:
        return gzip.decompress((out / f"{name}.txt.gz").read_bytes()).decode().split()

    assert read("common") == ["oesophagus", "rose", "the"]
    assert read("rare") == ["lymphadenopathy"]
    assert read("capitalised") == ["Emily", "Glasgow"]
    first = (out / "common.txt.gz").read_bytes()
    build(scowl, out)
    assert (out / "common.txt.gz").read_bytes() == first  # the same words write the same bytes


def test_building_without_scowl_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="apt-get install scowl"):
        build(tmp_path / "missing", tmp_path / "out")
