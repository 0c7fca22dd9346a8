"""The shipped drug table validates and is consistent; lookups work; bad tables fail precisely."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from hitl_app.safety.doses import parse_doses
from hitl_app.safety.drugtable import (
    DRUG_TABLE_PATH,
    Drug,
    DrugTable,
    DrugTableError,
    load_drug_table,
)

CATEGORY_WORDS = ["analgesic", "opioid", "antibiotic", "ACE inhibitor", "beta blocker", "anticoagulant",
                  "antidiabetic", "SSRI", "MAOI", "statin", "proton pump inhibitor", "corticosteroid",
                  "anticonvulsant", "nitrate", "PDE5 inhibitor"]  # fmt: skip


@pytest.fixture(scope="module")
def table() -> DrugTable:
    return load_drug_table()


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return json.loads(DRUG_TABLE_PATH.read_text(encoding="utf-8"))


def _write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "drugs.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _drug(data: dict[str, Any], generic: str) -> dict[str, Any]:
    return next(d for d in data["drugs"] if d["generic"] == generic)


# --- the shipped table ------------------------------------------------------------------------


def test_shipped_table_loads_once_and_is_cached(table: DrugTable) -> None:
    assert load_drug_table() is table
    assert load_drug_table(DRUG_TABLE_PATH) == table  # an explicit path loads afresh, same content


def test_shipped_table_is_large_and_flagged_for_pharmacist_review(table: DrugTable) -> None:
    assert len(table.drugs) >= 45
    assert "pharmacist" in table.note
    assert len(table.interactions) >= 8


@pytest.mark.parametrize("word", CATEGORY_WORDS)
def test_shipped_table_covers_each_drug_group(table: DrugTable, word: str) -> None:
    assert any(word.lower() in drug.category.lower() for drug in table.drugs)


def test_every_class_member_and_interaction_partner_is_a_known_drug(table: DrugTable) -> None:
    generics = {drug.generic for drug in table.drugs}
    for members in table.classes.values():
        assert set(members) <= generics
    for interaction in table.interactions:
        for side in interaction.drugs:
            assert side in generics or side in table.classes
            assert table.members(side) <= generics


def test_every_contraindication_and_source_is_in_its_vocabulary(table: DrugTable) -> None:
    for drug in table.drugs:
        assert set(drug.contraindications) <= set(table.conditions), drug.generic
        assert set(drug.sources) <= set(table.sources), drug.generic
    for interaction in table.interactions:
        assert set(interaction.sources) <= set(table.sources)


def test_condition_phrases_are_lower_case_and_every_condition_is_used(table: DrugTable) -> None:
    used = {c for drug in table.drugs for c in drug.contraindications}
    assert used == set(table.conditions)
    for phrases in table.conditions.values():
        assert phrases and all(p == p.lower() for p in phrases)


def test_ceilings_are_consistent(table: DrugTable) -> None:
    for drug in table.drugs:
        single, single_unit = drug.max_single_dose.normalised()
        daily, daily_unit = drug.max_daily_dose.normalised()
        assert single_unit == daily_unit, drug.generic
        assert 0 < single <= daily, drug.generic


@pytest.mark.parametrize(
    ("generic", "single_mg", "daily_mg"),
    [
        ("paracetamol", 1000, 4000),
        ("ibuprofen", 800, 2400),
        ("amoxicillin", 1000, 3000),
        ("warfarin", 10, 10),
        ("levothyroxine", 0.2, 0.2),  # listed in micrograms, compared in mg
        ("methotrexate", 25, 25),
    ],
)
def test_known_ceilings(table: DrugTable, generic: str, single_mg: float, daily_mg: float) -> None:
    drug = table.find(generic)
    assert drug is not None
    assert drug.max_single_dose.normalised() == (single_mg, "mg")
    assert drug.max_daily_dose.normalised() == (daily_mg, "mg")


def test_weekly_methotrexate_and_subcutaneous_heparin_say_so(table: DrugTable) -> None:
    methotrexate, heparin = table.find("methotrexate"), table.find("heparin")
    assert methotrexate is not None and methotrexate.min_interval_hours == 168
    assert heparin is not None and heparin.route == "subcutaneous"
    assert heparin.max_daily_dose.normalised() == (15000, "units")


# --- lookups --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "generic"),
    [
        ("Advil", "ibuprofen"),
        ("advil", "ibuprofen"),
        ("NUROFEN", "ibuprofen"),
        ("Tylenol", "paracetamol"),
        ("Panadol", "paracetamol"),
        ("acetaminophen", "paracetamol"),
        ("Paracetamol", "paracetamol"),
        ("albuterol", "salbutamol"),
        ("Coumadin", "warfarin"),
        ("Zoloft", "sertraline"),
        ("Isosorbide  Mononitrate", "isosorbide mononitrate"),
        ("sodium valproate", "valproate"),
    ],
)
def test_find_by_generic_alias_or_brand(table: DrugTable, name: str, generic: str) -> None:
    drug = table.find(name)
    assert drug is not None and drug.generic == generic


@pytest.mark.parametrize("name", ["", "aspirine", "vitamin z", "nsaids"])
def test_find_unknown_is_none(table: DrugTable, name: str) -> None:
    assert table.find(name) is None


def test_mentions_find_names_on_word_boundaries_in_order(table: DrugTable) -> None:
    text = "Took ADVIL and Tylenol with isosorbide mononitrate; not the Advilx or warfarins."
    found = [(m.drug.generic, text[m.span[0] : m.span[1]]) for m in table.mentions(text)]
    assert found == [
        ("ibuprofen", "ADVIL"),
        ("paracetamol", "Tylenol"),
        ("isosorbide mononitrate", "isosorbide mononitrate"),
    ]


def test_mentions_unpack_as_drug_and_span(table: DrugTable) -> None:
    [(drug, (start, end))] = table.mentions("Start warfarin 5 mg.")
    assert isinstance(drug, Drug) and drug.generic == "warfarin" and (start, end) == (6, 14)


def test_table_names_feed_the_dose_parser(table: DrugTable) -> None:
    [dose] = parse_doses("Give Panadol 1 g every 4 hours", drug_names=table.names())
    drug = table.find(dose.drug or "")
    assert drug is not None and drug.generic == "paracetamol"
    assert dose.daily_total == 6000 > drug.max_daily_dose.normalised()[0]


@pytest.mark.parametrize(
    ("text", "conditions"),
    [
        ("she is 20 weeks pregnant", {"pregnancy"}),
        ("Avoid in pregnancy and while breast-feeding", {"pregnancy", "breastfeeding"}),
        ("known asthmatic with CKD stage 4", {"asthma", "renal_failure"}),
        ("History of peptic ulcer and heart failure", {"peptic_ulcer", "heart_failure"}),
        ("He has myasthenia gravis and G6PD deficiency", {"myasthenia_gravis", "g6pd_deficiency"}),
        ("Patient with Parkinson’s disease", {"parkinsons_disease"}),  # curly apostrophe
        ("a 10-year-old child with a fever", {"children_under_16"}),
        ("haemophilia A, allergic to penicillin", {"bleeding_disorder", "penicillin_allergy"}),
        ("women of child-bearing potential, non-pregnant", set()),  # hyphenated words do not match
        ("healthy adult, normal kidney function", set()),
    ],
)
def test_conditions_in_text(table: DrugTable, text: str, conditions: set[str]) -> None:
    assert table.conditions_in(text) == conditions


def test_warfarin_and_ibuprofen_interact_through_the_nsaid_class(table: DrugTable) -> None:
    found = table.interactions_among(["warfarin", "Advil"])
    assert [(i.drugs, i.severity) for i in found] == [(("warfarin", "nsaids"), "high")]
    assert "bleeding" in found[0].explanation


@pytest.mark.parametrize(
    ("drugs", "pair"),
    [
        (["sertraline", "phenelzine"], ("ssris", "maois")),
        (["Viagra", "isosorbide mononitrate"], ("pde5_inhibitors", "nitrates")),
        (["methotrexate", "trimethoprim"], ("methotrexate", "trimethoprim")),
        (["Zocor", "clarithromycin"], ("simvastatin", "clarithromycin")),
        (["digoxin", "amiodarone"], ("digoxin", "amiodarone")),
    ],
)
def test_required_high_severity_interactions(table: DrugTable, drugs: list[str], pair: tuple[str, str]) -> None:
    found = table.interactions_among(drugs)
    assert [(i.drugs, i.severity) for i in found] == [(pair, "high")]


def test_no_interaction_within_one_drug_or_between_safe_drugs(table: DrugTable) -> None:
    assert table.interactions_among(["ibuprofen", "Advil", "Nurofen"]) == []
    assert table.interactions_among(["paracetamol", "amoxicillin", "omeprazole"]) == []
    assert table.interactions_among(["warfarin", "no-such-drug"]) == []


def test_interactions_accept_drug_objects_and_report_all_pairs(table: DrugTable) -> None:
    drugs = [table.find(n) for n in ("warfarin", "naproxen", "sertraline")]
    found = table.interactions_among(d for d in drugs if d is not None)
    assert {i.drugs for i in found} == {("warfarin", "nsaids"), ("ssris", "nsaids")}


def test_members_resolves_classes_and_names(table: DrugTable) -> None:
    assert "ibuprofen" in table.members("nsaids")
    assert table.members("Advil") == {"ibuprofen"}
    with pytest.raises(KeyError, match="neither a drug nor a class"):
        table.members("vitamins")


# --- bad tables -----------------------------------------------------------------------------------


def test_bad_field_error_names_the_drug_and_field(tmp_path: Path, raw: dict[str, Any]) -> None:
    data = copy.deepcopy(raw)
    _drug(data, "ibuprofen")["max_daily_dose"]["unit"] = "mgs"
    with pytest.raises(DrugTableError, match=r"drug 'ibuprofen', field max_daily_dose\.unit"):
        load_drug_table(_write(tmp_path, data))


def test_every_problem_is_reported_at_once(tmp_path: Path, raw: dict[str, Any]) -> None:
    data = copy.deepcopy(raw)
    _drug(data, "aspirin")["contraindications"].append("gout")
    _drug(data, "warfarin")["max_single_dose"] = {"value": 50, "unit": "mg"}
    data["classes"]["nsaids"].append("ketorolac")
    data["interactions"].append({"drugs": ["warfarin", "vitamin_k"], "severity": "moderate", "explanation": "x"})
    _drug(data, "naproxen")["brands"].append("Advil")
    with pytest.raises(DrugTableError) as caught:
        load_drug_table(_write(tmp_path, data))
    message = str(caught.value)
    assert "5 problem(s)" in message
    assert "drug 'aspirin', field contraindications: unknown condition 'gout'" in message
    assert "drug 'warfarin', field max_single_dose: 50.0 mg is above max_daily_dose 10.0 mg" in message
    assert "class 'nsaids': unknown drug 'ketorolac'" in message
    assert "'vitamin_k' is neither a generic name nor a class" in message
    assert "name 'Advil' is already used by drug 'ibuprofen'" in message


def test_missing_field_and_unknown_field_are_reported(tmp_path: Path, raw: dict[str, Any]) -> None:
    data = copy.deepcopy(raw)
    del _drug(data, "amoxicillin")["max_single_dose"]
    _drug(data, "metformin")["max_dose"] = 5
    with pytest.raises(DrugTableError) as caught:
        load_drug_table(_write(tmp_path, data))
    assert "drug 'amoxicillin', field max_single_dose: Field required" in str(caught.value)
    assert "drug 'metformin', field max_dose: Extra inputs are not permitted" in str(caught.value)


def test_missing_note_is_rejected(tmp_path: Path, raw: dict[str, Any]) -> None:
    data = copy.deepcopy(raw)
    del data["_note"]
    with pytest.raises(DrugTableError, match="_note"):
        load_drug_table(_write(tmp_path, data))


def test_unreadable_files_fail_with_the_path(tmp_path: Path) -> None:
    with pytest.raises(DrugTableError, match="not found"):
        load_drug_table(tmp_path / "absent.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    with pytest.raises(DrugTableError, match=r"broken\.json: not valid JSON"):
        load_drug_table(broken)
