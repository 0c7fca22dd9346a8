"""The PHI evaluation set: clinical sentences with identifiers, and clean ones, made by a seeded script.

``python -m hitl_app.bench.phi_set`` writes ``hitl_app/data/phi_eval.jsonl`` (the shipped copy;
the same seed writes the same file). The sentences are written here, independently of the
redaction rules, in the places identifiers take in clinical text: a name at the start of a
sentence, after a preposition, as a possessive, in apposition, after a title or a relation, in a
list; numbers with and without a cue. Names come from Faker in many locales, with hyphenated,
apostrophe and single-word names added; the other identifiers are Faker's or built with their
check digits. The clean sentences carry what must survive: eponyms (Parkinson's, Graves',
Guillain-Barré), drug names, scores (Wells, Glasgow, Apgar), anatomy, doses, units and dates that
belong to no patient.

Each line: ``id``, ``template``, ``locale``, ``text``, ``identifiers`` (each ``type`` and
``value``, exactly as it appears in ``text``) and ``clean`` (no identifier). Faker is needed only
to regenerate the file.
"""

from __future__ import annotations

import argparse
import json
import random
from datetime import date
from pathlib import Path
from typing import Callable

from ..core.shipped import shipped_file
from ..safety.phi import luhn_ok

# Fixed date ranges, not ones relative to today: the seeded set must be the same on any day.
ADULT_BORN = (date(1937, 1, 1), date(2007, 12, 31))  # aged 18 to 89 in 2026
ANYONE_BORN = (date(1937, 1, 1), date(2025, 1, 1))
STAY_DAYS = (date(2024, 1, 1), date(2025, 12, 31))  # admissions and discharges

PHI_EVAL_PATH = shipped_file("phi_eval.jsonl")
SEED = 19
LOCALES = (
    "en_US", "en_GB", "en_IN", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "pl_PL", "pt_BR", "tr_TR",
    "yo_NG", "zu_ZA", "ga_IE", "vi_VN",
)  # fmt: skip
PER_TEMPLATE = 16  # sentences per identifier template
CLEAN_PER_TEMPLATE = 12

APOSTROPHE_SURNAMES = ("O'Brien", "O'Connor", "D'Souza", "D'Angelo", "N'Diaye", "O'Neill", "D'Arcy", "O'Sullivan")
DRUGS = ("amoxicillin", "metformin", "ramipril", "apixaban", "sertraline", "levothyroxine", "atorvastatin",
         "furosemide", "prednisolone", "omeprazole", "salbutamol", "warfarin")  # fmt: skip
CONDITIONS = ("chest pain", "a productive cough", "new confusion", "a swollen left calf", "shortness of breath",
              "abdominal pain", "a fever of 38.9 C", "a rash on both legs", "palpitations", "a fall at home")  # fmt: skip


class Person:
    """A patient's or relative's name in one locale, in the shapes clinical text uses."""

    def __init__(self, fake, rng: random.Random) -> None:
        first, last = fake.first_name(), fake.last_name()
        shape = rng.random()
        if shape < 0.12:
            first = f"{first}-{fake.first_name()}"  # hyphenated first name
        elif shape < 0.24:
            last = rng.choice(APOSTROPHE_SURNAMES)
        elif shape < 0.32:
            last = f"{last}-{fake.last_name()}"  # double-barrelled surname
        self.first, self.last = first, last

    @property
    def full(self) -> str:
        """First and last name."""
        return f"{self.first} {self.last}"


# ----- identifier templates: each returns the text and its identifiers -----
Made = tuple[str, list[tuple[str, str]]]


def _templates() -> dict[str, Callable[[object, random.Random], Made]]:
    def person(fake, rng):
        return Person(fake, rng)

    def t(name: str):
        def register(fn):
            table[name] = fn
            return fn

        return register

    table: dict[str, Callable] = {}

    @t("start")
    def _(fake, rng):
        p = person(fake, rng)
        return f"{p.full} was seen in clinic today with {rng.choice(CONDITIONS)}.", [("NAME", p.full)]

    @t("preposition")
    def _(fake, rng):
        p = person(fake, rng)
        return f"Please give {rng.choice(DRUGS)} to {p.full} after breakfast.", [("NAME", p.full)]

    @t("possessive")
    def _(fake, rng):
        p = person(fake, rng)
        return f"{p.full}'s potassium came back at 5.9 this morning.", [("NAME", p.full)]

    @t("apposition")
    def _(fake, rng):
        p = person(fake, rng)
        relation = rng.choice(["son", "daughter", "husband", "wife", "carer"])
        return f"Her {relation}, {p.first}, says she has been more drowsy since Tuesday.", [("NAME", p.first)]

    @t("single_word")
    def _(fake, rng):
        p = person(fake, rng)
        return f"Spoke to {p.first} on the ward; pain is better with {rng.choice(DRUGS)}.", [("NAME", p.first)]

    @t("title")
    def _(fake, rng):
        p = person(fake, rng)
        title = rng.choice(["Mr", "Mrs", "Ms", "Dr", "Mr.", "Mrs."])
        return f"{title} {p.last} reports {rng.choice(CONDITIONS)} since last night.", [("NAME", p.last)]

    @t("referral_from")
    def _(fake, rng):
        p = person(fake, rng)
        return f"Referral letter from Dr {p.full} asks us to review the anticoagulation.", [("NAME", p.full)]

    @t("list_of_names")
    def _(fake, rng):
        a, b = person(fake, rng), person(fake, rng)
        return (f"Bloods are due for {a.full} and {b.full} before the ward round.",
                [("NAME", a.full), ("NAME", b.full)])  # fmt: skip

    @t("question_about")
    def _(fake, rng):
        p = person(fake, rng)
        return f"Is {rng.choice(DRUGS)} safe for {p.full} with an eGFR of 28?", [("NAME", p.full)]

    @t("name_comma")
    def _(fake, rng):
        p = person(fake, rng)
        return f"{p.last}, {p.first}: admitted overnight with {rng.choice(CONDITIONS)}.", [("NAME", p.last), ("NAME", p.first)]

    @t("mother_of")
    def _(fake, rng):
        p = person(fake, rng)
        return f"The mother of {p.full} called to ask about the MMR vaccine.", [("NAME", p.full)]

    @t("named_later")
    def _(fake, rng):
        p = person(fake, rng)
        return (f"{p.full} has type 2 diabetes. Yesterday {p.first} missed two doses of {rng.choice(DRUGS)}.",
                [("NAME", p.full), ("NAME", p.first)])  # fmt: skip

    @t("phone_cued")
    def _(fake, rng):
        number = fake.phone_number()
        return f"Call the daughter back on {number} with the results.", [("PHONE", number)]

    @t("phone_bare")
    def _(fake, rng):
        number = rng.choice(["07700 900", "020 7946 0", "+44 7700 900"]) + f"{rng.randrange(100, 999)}"
        return f"Mobile {number} - prefers texts after 6 pm.", [("PHONE", number)]

    @t("email")
    def _(fake, rng):
        address = fake.email()
        return f"Send the discharge summary to {address} please.", [("EMAIL", address)]

    @t("address")
    def _(fake, rng):
        street = f"{rng.randrange(2, 240)} {rng.choice(['Station Road', 'Elm Street', 'Mill Lane', 'Oak Avenue', 'Church Street'])}"
        return f"Lives alone at {street} and struggles with the stairs.", [("ADDRESS", street)]

    @t("postcode")
    def _(fake, rng):
        postcode = rng.choice(["SW1A 1AA", "M1 1AE", "B33 8TH", "CR2 6XH", "DN55 1PT", "LS1 4DY"])
        return f"District nurse visit to postcode {postcode} on Friday.", [("ADDRESS", postcode)]

    @t("ssn")
    def _(fake, rng):
        ssn = f"{rng.randrange(100, 665):03d}-{rng.randrange(1, 99):02d}-{rng.randrange(1, 9999):04d}"
        return f"Insurance form lists SSN {ssn} for the claim.", [("SSN", ssn)]

    @t("mrn")
    def _(fake, rng):
        mrn = f"{rng.choice(['RX', 'MRN', 'H'])}{rng.randrange(100000, 9999999)}"
        return f"Hospital number {mrn}: please chase the CT report.", [("MRN", mrn)]

    @t("nhs")
    def _(fake, rng):
        nhs = _nhs_number(rng)
        return f"NHS number {nhs} is on the referral.", [("NHS", nhs)]

    @t("dob")
    def _(fake, rng):
        dob = fake.date_between_dates(ADULT_BORN[0], ADULT_BORN[1]).strftime(rng.choice(["%d/%m/%Y", "%d %B %Y", "%Y-%m-%d"]))
        return f"Date of birth {dob}; allergic to penicillin.", [("DOB", dob)]

    @t("dob_born")
    def _(fake, rng):
        dob = fake.date_between_dates(ANYONE_BORN[0], ANYONE_BORN[1]).strftime("%d %B %Y")
        return f"The child was born on {dob} at 34 weeks.", [("DOB", dob)]

    @t("admitted_on")
    def _(fake, rng):
        day = fake.date_between_dates(STAY_DAYS[0], STAY_DAYS[1]).strftime(rng.choice(["%d/%m/%Y", "%d %B %Y"]))
        return f"She was admitted on {day} with {rng.choice(CONDITIONS)}.", [("DATE", day)]

    @t("discharged_on")
    def _(fake, rng):
        day = fake.date_between_dates(STAY_DAYS[0], STAY_DAYS[1]).strftime("%d %B %Y")
        return f"Discharged home on {day} on {rng.choice(DRUGS)}.", [("DATE", day)]

    @t("age_over_89")
    def _(fake, rng):
        age = str(rng.randrange(90, 106))
        return f"A {age}-year-old woman with {rng.choice(CONDITIONS)}.", [("AGE", age)]

    @t("age_over_89_aged")
    def _(fake, rng):
        age = str(rng.randrange(90, 106))
        return f"Patient aged {age} on {rng.choice(DRUGS)} and {rng.choice(DRUGS)}.", [("AGE", age)]

    @t("mbi")
    def _(fake, rng):
        mbi = _mbi(rng)
        return f"Medicare number {mbi} - check the part D plan.", [("MBI", mbi)]

    @t("npi")
    def _(fake, rng):
        npi = _npi(rng)
        return f"Prescriber NPI {npi} signed the order.", [("NPI", npi)]

    @t("card")
    def _(fake, rng):
        card = fake.credit_card_number(card_type=rng.choice(["visa16", "mastercard", "amex"]))
        return f"Paid the prescription charge with card {card}.", [("CARD", card)]

    @t("ip")
    def _(fake, rng):
        ip = fake.ipv4_public()
        return f"The home monitor uploads from {ip} every night.", [("IP", ip)]

    @t("url")
    def _(fake, rng):
        url = f"https://portal.{fake.domain_name()}/patients/{rng.randrange(10000, 999999)}"
        return f"Results are at {url} for the family.", [("URL", url)]

    @t("two_kinds")
    def _(fake, rng):
        p = person(fake, rng)
        number = fake.phone_number()
        return f"{p.full} ({number}) needs a repeat INR on Monday.", [("NAME", p.full), ("PHONE", number)]

    @t("signature")
    def _(fake, rng):
        p = person(fake, rng)
        return f"Reviewed with the family. {p.full}, staff nurse.", [("NAME", p.full)]

    return table


def _nhs_number(rng: random.Random) -> str:
    while True:
        digits = [rng.randrange(10) for _ in range(9)]
        check = 11 - sum(d * w for d, w in zip(digits, range(10, 1, -1))) % 11
        check = 0 if check == 11 else check
        if check != 10:
            s = "".join(map(str, digits + [check]))
            return f"{s[:3]} {s[3:6]} {s[6:]}"


def _npi(rng: random.Random) -> str:
    body = str(rng.choice([1, 2])) + "".join(str(rng.randrange(10)) for _ in range(8))
    # The NPI check digit is Luhn's over 80840 and the 9 digits.
    return body + next(d for d in "0123456789" if luhn_ok("80840" + body + d))


def _mbi(rng: random.Random) -> str:
    # CMS's format: C A AN N A AN N A A N N; letters without S, L, O, I, B, Z.
    letters = "ACDEFGHJKMNPQRTUVWXY"
    alnum = letters + "0123456789"
    c, n = (lambda: str(rng.randrange(1, 10))), (lambda: str(rng.randrange(10)))
    a, an = (lambda: rng.choice(letters)), (lambda: rng.choice(alnum))
    return "".join([c(), a(), an(), n(), a(), an(), n(), a(), a(), n(), n()])


# Eponymous terms, devices, wards and openers that look like names and are not.
EPONYMS = (
    "Baker's cyst", "Epstein-Barr virus", "a Child-Pugh score of B", "Hartmann's procedure", "Wernicke's encephalopathy",
    "Korsakoff syndrome", "Kaposi sarcoma", "Marfan syndrome", "Turner syndrome", "Meniere's disease",
    "Paget's disease of bone", "Sjögren's syndrome", "Huntington's disease", "Ludwig's angina",
    "Osgood-Schlatter disease", "Ehlers-Danlos syndrome", "Stevens-Johnson syndrome", "Wolff-Parkinson-White syndrome",
    "Brugada syndrome", "Dupuytren's contracture", "a Colles' fracture", "a positive Murphy's sign",
    "Rovsing's sign", "a positive Tinel's sign", "a Glasgow-Blatchford score of 6", "a Gleason score of 7",
    "Takotsubo cardiomyopathy", "Still's disease", "Behçet's disease", "Ménière's disease",
)  # fmt: skip
DEVICES = ("a Foley catheter", "a Doppler ultrasound", "a Holter monitor", "a Swan-Ganz catheter", "a Hickman line",
           "a Guedel airway", "a Venturi mask", "a Thomas splint", "a Yankauer sucker", "an Ambu bag")  # fmt: skip
WARDS = ("Nightingale ward", "Harrison ward", "Ward 7B", "the Victoria wing", "Lister ward", "the Jenner unit")
OPENERS = ("Seen in clinic", "Chase the MRI", "Plan:", "Impression:", "Reviewed on the ward round", "Hospital transport booked",
           "Lasix given", "Augmentin started", "Morphine held", "Switch to oral", "Please repeat the bloods")  # fmt: skip

def _sentence_start(phrase: str) -> str:
    return phrase[0].upper() + phrase[1:]


# ----- clean sentences: nothing may be redacted -----
CLEAN_TEMPLATES: dict[str, Callable[[random.Random], str]] = {
    "eponym_parkinson": lambda r: f"Parkinson's disease is treated with levodopa; review the dose every {r.randrange(3, 12)} months.",
    "eponym_graves": lambda r: f"Graves' disease can cause {r.choice(['palpitations', 'weight loss', 'a tremor', 'eye changes'])}; carbimazole {r.choice([10, 20, 40])} mg is started.",
    "eponym_addison": lambda r: f"Addison's disease needs hydrocortisone {r.choice([10, 15, 20])} mg a day in divided doses.",
    "eponym_gbs": lambda r: f"Guillain-Barré syndrome presents with ascending weakness {r.randrange(1, 4)} weeks after an infection.",
    "eponym_crohn": lambda r: f"Crohn's disease flares are assessed with a faecal calprotectin above {r.choice([50, 100, 200, 250])}.",
    "eponym_hodgkin": lambda r: f"Hodgkin lymphoma often presents with painless {r.choice(['neck', 'axillary', 'groin'])} lymphadenopathy.",
    "eponym_cushing": lambda r: f"Cushing's syndrome is screened with an overnight {r.choice([1, 2])} mg dexamethasone suppression test.",
    "eponym_bell": lambda r: f"Bell's palsy is treated with prednisolone {r.choice([50, 60])} mg within 72 hours for {r.choice([5, 10])} days.",
    "eponym_alzheimer": lambda r: f"Alzheimer's disease progresses slowly; donepezil {r.choice([5, 10])} mg at night may help memory.",
    "eponym_down": lambda r: f"Down syndrome is linked with {r.choice(['congenital heart disease', 'hypothyroidism', 'early-onset dementia', 'coeliac disease'])}.",
    "score_wells": lambda r: f"A Wells score of {r.randrange(1, 8)} makes a DVT likely; arrange a D-dimer.",
    "score_gcs": lambda r: f"Glasgow Coma Scale {r.randrange(3, 15)}/15 on arrival; pupils equal and reactive.",
    "score_apgar": lambda r: f"Apgar scores were {r.randrange(5, 9)} and {r.randrange(8, 10)} at one and five minutes.",
    "score_curb": lambda r: f"CURB-65 of {r.randrange(0, 4)}: consider admission for the pneumonia.",
    "dose": lambda r: f"Give {r.choice(DRUGS)} {r.choice([5, 10, 20, 40, 500])} mg once daily with food.",
    "vitals": lambda r: f"BP {r.randrange(100, 180)}/{r.randrange(60, 110)}, pulse {r.randrange(50, 130)}, sats {r.randrange(88, 100)}% on air.",
    "labs": lambda r: f"Sodium {r.randrange(125, 146)} mmol/L, potassium {r.randrange(30, 60) / 10} mmol/L, creatinine {r.randrange(50, 300)} umol/L.",
    "anatomy": lambda r: f"Tenderness over the {r.choice(['left', 'right'])} iliac fossa with guarding in the {r.choice(['right', 'left'])} {r.choice(['upper', 'lower'])} quadrant.",
    "schedule": lambda r: f"Repeat the blood test on {r.choice(['Monday', 'Friday', 'Wednesday'])} and review in {r.randrange(2, 6)} weeks.",
    "guideline": lambda r: f"NICE guidance from {r.randrange(2015, 2025)} recommends a statin for a QRISK above 10%.",
    "age_young": lambda r: f"A {r.randrange(18, 89)}-year-old man with {r.choice(CONDITIONS)} and no past history.",
    "units": lambda r: f"Infuse at {r.randrange(1, 20)} mL/hour and check the glucose every 4 hours.",
    "start_capital": lambda r: f"{r.choice(['Metformin', 'Apixaban', 'Ramipril', 'Sertraline'])} should be continued through the admission.",
    "place_drug": lambda r: f"{r.choice(['Warfarin', 'Apixaban', 'Clopidogrel'])} and {r.choice(['aspirin', 'ibuprofen', 'naproxen'])} together raise the bleeding risk.",
    "eponym_hashimoto": lambda r: f"Hashimoto's thyroiditis: start levothyroxine {r.choice([25, 50, 75])} micrograms and recheck TSH.",
    "eponym_raynaud": lambda r: f"Raynaud's phenomenon improves with {r.choice(['nifedipine', 'gloves', 'stopping smoking'])}.",
    "eponym_barrett": lambda r: f"Barrett's oesophagus needs surveillance endoscopy every {r.randrange(2, 5)} years.",
    "eponym_kawasaki": lambda r: f"Kawasaki disease with fever for {r.randrange(5, 8)} days needs IV immunoglobulin.",
    "two_drugs": lambda r: f"Switch {r.choice(DRUGS)} to {r.choice(DRUGS)} {r.choice([5, 10, 25, 50])} mg if the cough persists.",
    "ecg": lambda r: f"ECG shows {r.choice(['sinus rhythm', 'atrial fibrillation', 'a right bundle branch block'])} at {r.randrange(48, 140)} beats per minute.",
    "follow_up": lambda r: f"Follow up in the {r.choice(['Tuesday', 'Thursday', 'Saturday'])} clinic at {r.randrange(8, 17)}:{r.choice(['00', '15', '30', '45'])}.",
    "allergy": lambda r: f"Allergic to {r.choice(['penicillin', 'codeine', 'latex', 'trimethoprim'])}: {r.choice(['rash', 'wheeze', 'angioedema', 'vomiting'])} in {r.randrange(1990, 2024)}.",
    "eponym_varied": lambda r: f"Findings are in keeping with {r.choice(EPONYMS)}; discuss at the {r.choice(['Monday', 'Friday'])} meeting.",
    "eponym_first": lambda r: f"{_sentence_start(r.choice(EPONYMS))} was considered and ruled out.",
    "device": lambda r: f"Insert {r.choice(DEVICES)} and review in {r.randrange(2, 48)} hours.",
    "ward": lambda r: f"Transfer to {r.choice(WARDS)} once a bed is free; {r.choice(DRUGS)} to continue.",
    "opener": lambda r: f"{r.choice(OPENERS)} - {r.choice(CONDITIONS)} {r.choice(['improving', 'unchanged', 'worse'])}.",
    "scan": lambda r: f"MRI of the lumbar spine showed a disc prolapse at L{r.randrange(3, 5)}/5.",
}


def generate(seed: int = SEED) -> list[dict]:
    """Every sentence of the set, in a fixed order for ``seed``."""
    from faker import Faker

    rng = random.Random(seed)
    fakers = {}
    for i, locale in enumerate(LOCALES):
        fakers[locale] = Faker(locale)
        fakers[locale].seed_instance(seed * 100 + i)
    rows: list[dict] = []
    for name, make in _templates().items():
        for k in range(PER_TEMPLATE):
            locale = LOCALES[(k + len(rows)) % len(LOCALES)]
            text, identifiers = make(fakers[locale], rng)
            rows.append({"template": name, "locale": locale, "text": text, "clean": False,
                         "identifiers": [{"type": kind, "value": value} for kind, value in identifiers]})  # fmt: skip
    for name, make in CLEAN_TEMPLATES.items():
        seen = set()
        for _ in range(CLEAN_PER_TEMPLATE * 5):
            text = make(rng)
            if text not in seen:
                seen.add(text)
                rows.append({"template": name, "locale": None, "text": text, "clean": True, "identifiers": []})
            if len(seen) == CLEAN_PER_TEMPLATE:
                break
    return [{"id": f"phi-{i + 1:04d}", **row} for i, row in enumerate(rows)]


def main(argv: list[str] | None = None) -> int:
    """Write the set (the shipped file by default)."""
    parser = argparse.ArgumentParser(prog="python -m hitl_app.bench.phi_set", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PHI_EVAL_PATH)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    rows = generate(args.seed)
    args.out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} sentences ({sum(not r['clean'] for r in rows)} with identifiers) to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
