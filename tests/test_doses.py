"""Doses in free text: amounts, units, tablet counts, frequencies and daily totals."""

from __future__ import annotations

from typing import NamedTuple

import pytest

from hitl_app.safety.doses import DoseMention, normalise_amount, parse_doses

NAMES = ["paracetamol", "acetaminophen", "Tylenol", "ibuprofen", "Advil", "aspirin", "amoxicillin",
         "levothyroxine", "methotrexate", "isosorbide mononitrate"]  # fmt: skip


class Want(NamedTuple):
    """What one mention must read as: amount/per_dose/daily_total in mg (or units / mL)."""

    amount: float
    per_dose: float | None
    frequency: float | None
    daily_total: float | None
    count: float = 1.0
    unit: str = "mg"
    stated_daily: bool = False


# (text, the single mention it must yield)
PARSES: list[tuple[str, Want]] = [
    # intervals
    ("500 mg every 6 hours", Want(500, 500, 4, 2000)),
    ("1 g q8h", Want(1000, 1000, 3, 3000)),
    ("10 mg q4h", Want(10, 10, 6, 60)),
    ("500 mg q12h", Want(500, 500, 2, 1000)),
    ("1 g every 4 to 6 hours", Want(1000, 1000, 6, 6000)),
    ("1 g every 4-6 hours as needed", Want(1000, 1000, 6, 6000)),
    ("650 mg q4-6h prn", Want(650, 650, 6, 3900)),
    ("5 mg 4-hourly", Want(5, 5, 6, 30)),
    ("one gram every eight hours", Want(1000, 1000, 3, 3000)),
    # once a day and times a day
    ("81mg daily", Want(81, 81, 1, 81)),
    ("10 mg once daily", Want(10, 10, 1, 10)),
    ("5 mg twice a day", Want(5, 5, 2, 10)),
    ("1,000 mg twice daily", Want(1000, 1000, 2, 2000)),
    ("200 mg three times daily", Want(200, 200, 3, 600)),
    ("1g 4 times a day", Want(1000, 1000, 4, 4000)),
    ("250 mg 2x/day", Want(250, 250, 2, 500)),
    ("500 mg three to four times a day", Want(500, 500, 4, 2000)),
    ("1 g up to 4 times a day", Want(1000, 1000, 4, 4000)),
    ("400 mg up to three times a day", Want(400, 400, 3, 1200)),
    # Latin abbreviations
    ("400mg TDS", Want(400, 400, 3, 1200)),
    ("500 mg TID", Want(500, 500, 3, 1500)),
    ("500 mg BID", Want(500, 500, 2, 1000)),
    ("250 mg BD", Want(250, 250, 2, 500)),
    ("500 mg QID", Want(500, 500, 4, 2000)),
    ("1 g QDS", Want(1000, 1000, 4, 4000)),
    ("40 mg OD", Want(40, 40, 1, 40)),
    ("500 mg p.o. b.i.d.", Want(500, 500, 2, 1000)),
    ("250 mg t.d.s.", Want(250, 250, 3, 750)),
    ("10 mg nocte", Want(10, 10, 1, 10)),
    ("10 mg ON", Want(10, 10, 1, 10)),
    # time of day, alternate days, weekly
    ("10 mg at night", Want(10, 10, 1, 10)),
    ("20 mg at bedtime", Want(20, 20, 1, 20)),
    ("40 mg every morning", Want(40, 40, 1, 40)),
    ("5 mg every other day", Want(5, 5, 0.5, 2.5)),
    ("5 mg on alternate days", Want(5, 5, 0.5, 2.5)),
    ("15 mg once weekly", Want(15, 15, 1 / 7, 15 / 7)),
    # units: micrograms, grams, decimals
    ("100 mcg daily", Want(0.1, 0.1, 1, 0.1)),
    ("200 µg daily", Want(0.2, 0.2, 1, 0.2)),
    ("200 μg daily", Want(0.2, 0.2, 1, 0.2)),
    ("50 micrograms OD", Want(0.05, 0.05, 1, 0.05)),
    ("1.5 g", Want(1500, 1500, None, None)),
    ("2 grams twice daily", Want(2000, 2000, 2, 4000)),
    ("10 mL three times a day", Want(10, 10, 3, 30, unit="mL")),
    ("10 units at bedtime", Want(10, 10, 1, 10, unit="units")),
    ("20 IU daily", Want(20, 20, 1, 20, unit="units")),
    # tablet counts
    ("two 200 mg tablets three times a day", Want(200, 400, 3, 1200, count=2)),
    ("a 500 mg tablet", Want(500, 500, None, None)),
    ("an 81 mg tablet daily", Want(81, 81, 1, 81)),
    ("three 5 mg tablets OD", Want(5, 15, 1, 15, count=3)),
    ("half a 10 mg tablet at night", Want(10, 5, 1, 5, count=0.5)),
    ("2 x 500 mg four times daily", Want(500, 1000, 4, 4000, count=2)),
    ("1-2 tablets of 500 mg every 4-6 hours", Want(500, 1000, 6, 6000, count=2)),
    ("one or two 500 mg tablets every 4 hours", Want(500, 1000, 6, 6000, count=2)),
    ("take 2 tablets (500 mg each) every 6 hours", Want(500, 1000, 4, 4000, count=2)),
    # ranges keep the upper bound
    ("500 mg to 1 g every 4 to 6 hours", Want(1000, 1000, 6, 6000)),
    ("500-1000 mg q6h", Want(1000, 1000, 4, 4000)),
    ("0.5–1 g twice daily", Want(1000, 1000, 2, 2000)),
    # stated daily amounts
    ("maximum of 3 g per day", Want(3000, None, None, 3000, stated_daily=True)),
    ("max 4 g in 24 hours", Want(4000, None, None, 4000, stated_daily=True)),
    ("do not exceed 4 g daily", Want(4000, None, None, 4000, stated_daily=True)),
    ("4 g/day", Want(4000, None, None, 4000, stated_daily=True)),
    ("no more than 8 x 500 mg in any 24-hour period", Want(500, None, None, 4000, count=8, stated_daily=True)),
    ("maximum daily dose of 4 g", Want(4000, None, None, 4000, stated_daily=True)),
]

NOT_DOSES = [
    "in the last 24 hours",
    "blood pressure 140/90",
    "blood pressure 140/90 mmHg",
    "age 65",
    "2 weeks",
    "for 2 weeks, review in 3 days",
    "a 65-year-old man, 3 episodes in 24 hours",
    "weight 70 kg, BMI 31",
    "15 mg/kg",  # weight-based: not a fixed dose
    "Hb 120 g/L",  # a concentration
    "eGFR 25 ml/min",  # a rate
    "take every 6 hours twice daily",  # a schedule with no amount
]


@pytest.mark.parametrize(("text", "want"), PARSES, ids=[text for text, _ in PARSES])
def test_parses(text: str, want: Want) -> None:
    [mention] = parse_doses(text)
    assert mention.amount == pytest.approx(want.amount)
    assert mention.unit == want.unit
    assert mention.count == pytest.approx(want.count)
    assert mention.per_dose == (None if want.per_dose is None else pytest.approx(want.per_dose))
    assert mention.frequency_per_day == (None if want.frequency is None else pytest.approx(want.frequency, rel=1e-5))
    assert mention.daily_total == (None if want.daily_total is None else pytest.approx(want.daily_total, rel=1e-5))
    assert mention.stated_daily is want.stated_daily


@pytest.mark.parametrize("text", NOT_DOSES)
def test_numbers_that_are_not_doses(text: str) -> None:
    assert parse_doses(text, NAMES) == []


@pytest.mark.parametrize(
    ("text", "drugs"),
    [
        ("Paracetamol 500 mg every 6 hours", ["paracetamol"]),
        ("aspirin 81mg daily", ["aspirin"]),
        ("Advil 200mg", ["Advil"]),  # reported as spelled in the names list
        ("TYLENOL 650 mg q6h", ["Tylenol"]),
        ("1 g of paracetamol every 6 hours", ["paracetamol"]),
        ("two 500 mg paracetamol tablets", ["paracetamol"]),
        ("400 mg ibuprofen TDS and 1 g paracetamol QDS", ["ibuprofen", "paracetamol"]),
        ("Paracetamol 500 mg ibuprofen 400 mg", ["paracetamol", "ibuprofen"]),
        ("For pain, paracetamol can be taken as 1 g every 6 hours", ["paracetamol"]),
        ("Isosorbide mononitrate 60 mg in the morning", ["isosorbide mononitrate"]),
        ("Paracetamol helps. Take 1 g every 6 hours", [None]),  # a different sentence
        ("Take 1 g every 6 hours", [None]),
    ],
)
def test_drug_is_the_name_next_to_or_before_the_dose(text: str, drugs: list[str | None]) -> None:
    assert [m.drug for m in parse_doses(text, NAMES)] == drugs


def test_without_names_no_drug_is_guessed() -> None:
    [mention] = parse_doses("Paracetamol 500 mg every 6 hours")
    assert mention.drug is None


def test_dose_then_stated_maximum_in_one_sentence() -> None:
    text = "Paracetamol: take two 500 mg tablets every 6 hours, max 4 g in 24 hours."
    first, second = parse_doses(text, NAMES)
    assert (first.drug, first.per_dose, first.frequency_per_day, first.daily_total) == ("paracetamol", 1000, 4, 4000)
    assert not first.stated_daily
    assert (second.drug, second.per_dose, second.frequency_per_day) == ("paracetamol", None, None)
    assert second.daily_total == 4000
    assert second.stated_daily


def test_span_covers_count_amount_and_frequency() -> None:
    text = "Take two 200 mg tablets three times a day with food."
    [mention] = parse_doses(text)
    assert mention.text == "two 200 mg tablets three times a day"
    assert text[mention.span[0] : mention.span[1]] == mention.text


def test_span_stops_at_the_amount_when_no_frequency_follows() -> None:
    [mention] = parse_doses("10 mg on day 1")
    assert mention.text == "10 mg"
    assert mention.frequency_per_day is None


def test_a_clause_break_ends_the_search_for_a_frequency() -> None:
    first, second = parse_doses("500 mg for 5 days then 250 mg daily")
    assert first.frequency_per_day is None and first.daily_total is None
    assert (second.per_dose, second.frequency_per_day) == (250, 1)


def test_a_bare_number_before_an_amount_is_not_a_tablet_count() -> None:
    # "day 3" is not three tablets: without "x", "tablets of" or a dosage form the number is ignored.
    [mention] = parse_doses("day 3 500 mg twice daily")
    assert (mention.count, mention.per_dose, mention.text) == (1, 500, "500 mg twice daily")


def test_mentions_are_frozen_values() -> None:
    [mention] = parse_doses("5 mg twice a day")
    assert isinstance(mention, DoseMention)
    with pytest.raises(AttributeError):
        mention.amount = 10  # type: ignore[misc]


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        (1, "g", (1000, "mg")),
        (250, "mcg", (0.25, "mg")),
        (250, "µg", (0.25, "mg")),
        (0.3, "g", (300, "mg")),
        (5000, "units", (5000, "units")),
        (10, "mL", (10, "mL")),
        (10, "ML", (10, "mL")),
    ],
)
def test_normalise_amount(value: float, unit: str, expected: tuple[float, str]) -> None:
    assert normalise_amount(value, unit) == expected


def test_normalise_amount_rejects_unknown_units() -> None:
    with pytest.raises(ValueError, match="unknown dose unit 'mmol'.*known units"):
        normalise_amount(5, "mmol")
