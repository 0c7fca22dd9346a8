"""phi: redaction of personal identifiers from free text before it is stored.

Table-driven: identifiers that must be replaced by their typed placeholder, clinical text that
must come back unchanged, and a long note that mixes many identifiers. Pure functions; no store
or model is involved.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from hitl_app.safety.phi import PHI_TYPES, Redaction, placeholder, redact, redact_many

# ----- what must be caught: (text, raw values that must not survive, expected counts) -----

POSITIVE = [
    # names after a cue; the cue and the title are kept so the sentence still reads
    pytest.param("patient John Smith was seen today", ["John", "Smith"], {"NAME": 1}, id="name-patient"),
    pytest.param("Mr. Jones reports chest pain", ["Jones"], {"NAME": 1}, id="name-mr"),
    pytest.param("Mrs O'Brien was reviewed", ["O'Brien", "Brien"], {"NAME": 1}, id="name-mrs-apostrophe"),
    pytest.param("Discussed with Dr. Sarah Lee (cardiology)", ["Sarah", "Lee"], {"NAME": 1}, id="name-clinician"),
    pytest.param("my patient, Maria Garcia, has asthma", ["Maria", "Garcia"], {"NAME": 1}, id="name-aside"),
    pytest.param("pt: J. Doe, 54, with SOB", ["J. Doe", "Doe"], {"NAME": 1}, id="name-pt-initial"),
    pytest.param("name: Ahmed Khan", ["Ahmed", "Khan"], {"NAME": 1}, id="name-colon"),
    pytest.param("Ms Anna-Marie Smith-Jones attended", ["Anna-Marie", "Smith-Jones"], {"NAME": 1}, id="name-hyphens"),
    pytest.param(
        "seen by Dr Patel on behalf of Jane Doe", ["Patel", "Jane", "Doe"], {"NAME": 2}, id="name-on-behalf-of"
    ),
    pytest.param("son of Robert Brown, who is his carer", ["Robert", "Brown"], {"NAME": 1}, id="name-son-of"),
    pytest.param("her husband, Tom, called the ward", ["Tom"], {"NAME": 1}, id="name-her-husband"),
    pytest.param("next of kin: Emma Wilson", ["Emma", "Wilson"], {"NAME": 1}, id="name-next-of-kin"),
    pytest.param("patient Sean McDonald", ["Sean", "McDonald"], {"NAME": 1}, id="name-mc"),
    pytest.param("patient Maria de la Cruz", ["Maria", "Cruz"], {"NAME": 1}, id="name-particles"),
    pytest.param("Dr. Lee's clinic", ["Lee"], {"NAME": 1}, id="name-possessive"),
    pytest.param(
        "Mr Jones was admitted. Jones reports nausea.", ["Jones"], {"NAME": 2}, id="name-recurs-bare"
    ),
    pytest.param("Patient Information for Mr Hughes", ["Hughes"], {"NAME": 1}, id="name-after-rejected-cue"),
    pytest.param("Mr Vũ was seen", ["Vũ"], {"NAME": 1}, id="name-vietnamese"),
    pytest.param("Dr Thies Röhrdanz called", ["Thies", "Röhrdanz"], {"NAME": 1}, id="name-umlaut"),
    pytest.param("patient Bayzettin Çamurcuoğlu-Soylu", ["Bayzettin", "Çamurcuoğlu"], {"NAME": 1}, id="name-turkish"),
    # medical record numbers
    pytest.param("MRN 12345678", ["12345678"], {"MRN": 1}, id="mrn"),
    pytest.param("MRN: A1234567", ["A1234567"], {"MRN": 1}, id="mrn-letter"),
    pytest.param("medical record number 00123456", ["00123456"], {"MRN": 1}, id="mrn-words"),
    pytest.param("hospital number 7654321", ["7654321"], {"MRN": 1}, id="mrn-hospital-number"),
    # NHS numbers
    pytest.param("NHS number 943 476 5919", ["943 476 5919"], {"NHS": 1}, id="nhs-cued"),
    pytest.param("NHS No: 943-476-5918", ["943-476-5918"], {"NHS": 1}, id="nhs-cued-bad-check-digit"),
    pytest.param("ref 943 476 5919 on file", ["943 476 5919"], {"NHS": 1}, id="nhs-bare-valid"),
    pytest.param("9434765919", ["9434765919"], {"NHS": 1}, id="nhs-bare-contiguous"),
    # phone numbers
    pytest.param("call (555) 123-4567", ["123-4567"], {"PHONE": 1}, id="phone-us-parens"),
    pytest.param("call 555-123-4567", ["555-123-4567"], {"PHONE": 1}, id="phone-us-dashes"),
    pytest.param("call +1 555 123 4567", ["555 123 4567"], {"PHONE": 1}, id="phone-us-international"),
    pytest.param("mobile 07700 900123", ["07700 900123"], {"PHONE": 1}, id="phone-uk-mobile"),
    pytest.param("mobile +44 7700 900123", ["7700 900123"], {"PHONE": 1}, id="phone-uk-international"),
    pytest.param("ring 020 7946 0958 after 5", ["7946 0958"], {"PHONE": 1}, id="phone-uk-london"),
    pytest.param("tel: 5551234567", ["5551234567"], {"PHONE": 1}, id="phone-cued-contiguous"),
    # emails
    pytest.param("email john.doe@example.com today", ["john.doe@example.com"], {"EMAIL": 1}, id="email"),
    pytest.param("reply to j_doe+clinic@nhs.net", ["j_doe+clinic@nhs.net"], {"EMAIL": 1}, id="email-plus"),
    # addresses and postcodes
    pytest.param("lives at 12 Baker Street alone", ["Baker"], {"ADDRESS": 1}, id="address-street"),
    pytest.param("221B Baker St.", ["221B", "Baker"], {"ADDRESS": 1}, id="address-abbreviated"),
    pytest.param("1600 Pennsylvania Avenue NW", ["Pennsylvania"], {"ADDRESS": 1}, id="address-directional"),
    pytest.param("45 Elm Rd, Springfield", ["Elm", "Springfield"], {"ADDRESS": 1}, id="address-city"),
    pytest.param("Flat 3, 10 High Road", ["Flat 3", "High Road"], {"ADDRESS": 1}, id="address-flat"),
    pytest.param("postcode SW1A 1AA", ["SW1A 1AA"], {"ADDRESS": 1}, id="address-uk-postcode"),
    # The town, two known proper names, goes too: as a name, since names and places share words.
    pytest.param("Beverly Hills, CA 90210", ["90210", "Beverly"], {"ADDRESS": 1, "NAME": 1}, id="address-zip-after-state"),
    pytest.param(
        "12 Baker Street, London NW1 6XE", ["Baker", "London", "NW1 6XE"], {"ADDRESS": 1}, id="address-full-uk"
    ),
    # social security numbers
    pytest.param("SSN 123-45-6789", ["123-45-6789"], {"SSN": 1}, id="ssn"),
    pytest.param("SSN 123456789", ["123456789"], {"SSN": 1}, id="ssn-contiguous"),
    # dates of birth
    pytest.param("DOB 03/14/1962", ["03/14/1962"], {"DOB": 1}, id="dob-us"),
    pytest.param("date of birth: 14 March 1962", ["14 March 1962"], {"DOB": 1}, id="dob-words"),
    pytest.param("born on 1962-03-14", ["1962-03-14"], {"DOB": 1}, id="dob-iso"),
    pytest.param("D.O.B. 14.03.62", ["14.03.62"], {"DOB": 1}, id="dob-dotted"),
    pytest.param("DOB: Jan 5, 1980", ["Jan 5, 1980"], {"DOB": 1}, id="dob-month-first"),
    # dates tied to the patient's stay, and ages over 89 (HIPAA Safe Harbor)
    pytest.param(
        "Admitted 14/03/2024, discharged 16/03/2024", ["14/03/2024", "16/03/2024"], {"DATE": 2}, id="admission-dates"
    ),
    pytest.param("date of death: 2 June 2025", ["2 June 2025"], {"DATE": 1}, id="date-of-death"),
    pytest.param("a 94-year-old man with sepsis", ["94"], {"AGE": 1}, id="age-over-89"),
    pytest.param("patient aged 101, frail", ["101"], {"AGE": 1}, id="age-aged"),
    # US identifiers with their check digits where they have one
    pytest.param("Medicare number 1EG4-TE5-MK73", ["1EG4-TE5-MK73"], {"MBI": 1}, id="mbi-dashed"),
    pytest.param("MBI 1EG4TE5MK73 on file", ["1EG4TE5MK73"], {"MBI": 1}, id="mbi"),
    pytest.param("NPI 1234567893 signed", ["1234567893"], {"NPI": 1}, id="npi-cued"),
    pytest.param("prescriber 1245319599 on the form", ["1245319599"], {"NPI": 1}, id="npi-bare-check-digit"),
    pytest.param("card 4111 1111 1111 1111 was charged", ["4111 1111 1111 1111"], {"CARD": 1}, id="card-luhn"),
    pytest.param("paid with 378282246310005", ["378282246310005"], {"CARD": 1}, id="card-amex"),
    # network identifiers
    pytest.param("uploads from 203.0.113.42 nightly", ["203.0.113.42"], {"IP": 1}, id="ipv4"),
    pytest.param("device 2001:db8:85a3::8a2e:370:7334", ["2001:db8:85a3::8a2e:370:7334"], {"IP": 1}, id="ipv6"),
    pytest.param(
        "see https://portal.example.org/patients/88231/results", ["88231"], {"URL": 1}, id="url-with-record"
    ),
    # numbers in other numbering plans, and long bare numbers
    pytest.param("call back on (0121) 496 0350", ["496 0350"], {"PHONE": 1}, id="phone-uk-bracketed-area"),
    pytest.param("ring 555-849-4909x991 today", ["849-4909"], {"PHONE": 1}, id="phone-extension"),
    pytest.param("contact 058394981 for the results", ["058394981"], {"PHONE": 1}, id="phone-bare-9-digits"),
]


@pytest.mark.parametrize("text, raw, counts", POSITIVE)
def test_identifier_is_replaced_by_its_placeholder(text: str, raw: list[str], counts: dict[str, int]) -> None:
    result = redact(text)
    for value in raw:
        assert value not in result.text, f"{value!r} survived in {result.text!r}"
    for kind in counts:
        assert placeholder(kind) in result.text
    assert result.counts == counts


@pytest.mark.parametrize("text, raw, counts", POSITIVE)
def test_redacting_twice_changes_nothing(text: str, raw: list[str], counts: dict[str, int]) -> None:
    once = redact(text)
    twice = redact(once.text)
    assert twice.text == once.text
    assert twice.counts == {}


# ----- what must be kept: clinical text that comes back unchanged -----

NEGATIVE = [
    pytest.param("Patient presents with chest pain", id="patient-presents"),
    pytest.param("Paracetamol 1 g every 6 hours, at most 4 g a day.", id="drug-at-sentence-start"),
    pytest.param("History of Parkinson's disease and Addison's; Crohn's in remission.", id="eponyms"),
    pytest.param("patient Parkinson's disease is advanced", id="eponym-after-cue"),
    pytest.param("Type 2 diabetes, on metformin 500 mg BD", id="type-2-diabetes"),
    pytest.param("Symptoms started on 3 March and worsened on 2024-03-14.", id="dates-not-birth"),
    pytest.param("65-year-old man, aged 65, born in 1962", id="ages-and-birth-year"),
    pytest.param("500 mg every 6 hours", id="dose"),
    pytest.param("BP 140/90, HR 88, RR 16, SpO2 96% on 2 L, Temp 37.8 C", id="vitals"),
    pytest.param("HbA1c 48 mmol/mol (6.5%), eGFR 25, INR 2.5", id="labs"),
    pytest.param("Na 138, K 4.1, Cr 92 umol/L, Urea 6.1, Hb 135 g/L, Plt 250", id="chemistry"),
    pytest.param("Take 1-2 tablets up to 4 times a day", id="range"),
    pytest.param("Diagnosis ICD-10 I21.9, NDC 0002-3227-30", id="codes"),
    pytest.param("Follow-up on 16/03/2024 in clinic", id="date-not-tied-to-a-stay"),
    pytest.param("A 72-year-old woman aged 72", id="age-under-90"),
    pytest.param("Guidance at https://www.nhs.uk/conditions/asthma/ explains inhalers", id="guideline-url"),
    pytest.param("Software version 3.8.0.1 on the pump", id="version-number"),
    pytest.param("Hb 135 128 119 over three days", id="lab-values-in-a-row"),
    pytest.param("Ferritin 12 ug/L; B12 250 ng/L; vitamin D 25 nmol/L", id="vitamins"),
    pytest.param("Stage T2 N0 M0 adenocarcinoma", id="tnm"),
    pytest.param("Call 999 or 111 if symptoms worsen", id="emergency-numbers"),
    pytest.param("Warfarin: target INR 2-3; check in 5-7 days", id="targets"),
    pytest.param("Insulin glargine 10 units at 22:00, glucose 5.6-7.8 mmol/L", id="insulin"),
    pytest.param("Patient Health Questionnaire score 12; Patient Safety Incident logged", id="patient-phrases"),
    pytest.param("Discussed with patient, Paracetamol 1 g given.", id="patient-comma-sentence"),
    pytest.param("Patient education provided; patient-controlled analgesia", id="patient-lower-case"),
    pytest.param("drug name: Tylenol; brand name: Nurofen", id="product-names"),
    pytest.param("Mother: Type 2 diabetes. Father: MI at 55.", id="family-history"),
    pytest.param("MS relapse; MR moderate, LVEF 45%; ECG: ST elevation V1-V4", id="abbreviations"),
    pytest.param("Weight 72.5 kg, height 1.75 m, BMI 23.7, urine 0.5 mL/kg/h", id="measurements"),
    pytest.param("Seen at St Thomas' Hospital, Bay 3, Ward 5", id="hospital"),
    pytest.param("Hep B vaccine at 0, 1 and 6 months; PSA 4.2 ng/mL in 2023", id="schedules"),
    pytest.param("Down syndrome, Bell's palsy and Graves' disease", id="more-eponyms"),
    pytest.param("Take 2 Tylenol Extra Strength tablets", id="number-then-capitals"),
    # Capitalised words that look like names to the name detector (safety/names.py) and are not.
    pytest.param("Parkinson's disease is treated with levodopa.", id="eponym-disease"),
    pytest.param("Graves' disease and Guillain-Barré syndrome were discussed.", id="eponyms"),
    pytest.param("Hodgkin lymphoma presents with painless lymphadenopathy.", id="eponym-lymphoma"),
    pytest.param("A Wells score of 3 and an Apgar score of 9.", id="scores"),
    pytest.param("Glasgow Coma Scale 14/15 on arrival.", id="glasgow"),
    pytest.param("Insert a Foley catheter; a Baker's cyst and a positive Murphy's sign.", id="devices-and-signs"),
    pytest.param("Apixaban should be continued through the admission.", id="drug-at-sentence-start"),
    pytest.param("Co-amoxiclav started; Lasix given; Seretide twice daily.", id="combination-and-brands"),
    pytest.param("Switch to oral. Findings are stable.", id="sentence-openers"),
    pytest.param("I've had NSAIDs and my HbA1c is 48.", id="contraction-and-acronyms"),
    pytest.param("Staphylococcus aureus grew; Escherichia coli in the urine.", id="genus-and-species"),
    pytest.param("Travelled to Thailand and Cambodia; of Black African heritage.", id="countries-and-peoples"),
    pytest.param("Transfer to Nightingale ward, Ward 7B, or the Victoria wing.", id="wards"),
    pytest.param("Past history: Type 2 Diabetes Mellitus and Colon Cancer.", id="title-case-conditions"),
    pytest.param("Morse Fall Scale suggests a high risk; leaflet on Head Injury given.", id="title-case-phrases"),
    pytest.param("Anticoagulation is recommended; Helicobacter pylori was eradicated.", id="medical-words"),
    pytest.param("Follow up at the Friday clinic in March.", id="days-and-months"),
    pytest.param("OGD showed a Forrest IIa ulcer.", id="classification-with-numeral"),
]


@pytest.mark.parametrize("text", NEGATIVE)
def test_clinical_text_is_kept(text: str) -> None:
    result = redact(text)
    assert result.text == text
    assert result.counts == {}


# ----- a whole note -----

NOTE_VALUES = {
    "NAME": ["Margaret", "Thornton", "Okafor", "Peter"],
    "MRN": ["A7654321"],
    "NHS": ["943 476 5919"],
    "PHONE": ["07700 900456", "(555) 987-6543"],
    "EMAIL": ["m.thornton@example.org"],
    "ADDRESS": ["Acacia Avenue", "Reading", "RG1 8AA"],
    "SSN": ["078-05-1120"],
    "DOB": ["02/11/1948"],
}
NOTE = (
    "Discharge summary. Patient Margaret Thornton (DOB 02/11/1948, MRN A7654321, NHS number 943 476 5919), "
    "of 27 Acacia Avenue, Reading RG1 8AA, was admitted with community-acquired pneumonia. "
    "Seen by Dr. Okafor on the ward round. CURB-65 score 2; BP 118/76, HR 96, SpO2 93% on air. "
    "Started amoxicillin 500 mg TDS and clarithromycin 500 mg BD for 5 days. Thornton improved by day 3. "
    "Her son, Peter, asked to be called on 07700 900456 or (555) 987-6543, email m.thornton@example.org. "
    "US insurance record SSN 078-05-1120. Follow up in 6 weeks with a repeat chest X-ray."
)


def test_long_note_keeps_no_identifier() -> None:
    result = redact(NOTE)
    for kind, values in NOTE_VALUES.items():
        for value in values:
            assert value not in result.text, f"{kind} value {value!r} survived"
        assert result.counts.get(kind, 0) >= 1, f"no {kind} redacted"
    # the clinical content is untouched
    for kept in ("CURB-65 score 2", "BP 118/76", "amoxicillin 500 mg TDS", "in 6 weeks", "Dr. [NAME]"):
        assert kept in result.text
    assert redact(result.text) == Redaction(text=result.text, counts={})


# ----- the API -----


def test_redact_many_sums_counts_and_keeps_order() -> None:
    texts, counts = redact_many(["Mr Jones, MRN 12345678", "BP 140/90", "call 555-123-4567 or Mrs Patel"])
    assert texts == ["Mr [NAME], MRN [MRN]", "BP 140/90", "call [PHONE] or Mrs [NAME]"]
    assert counts == {"NAME": 2, "MRN": 1, "PHONE": 1}
    assert redact_many([]) == ([], {})


def test_counts_use_known_types_and_never_hold_values() -> None:
    result = redact(NOTE)
    assert set(result.counts) <= set(PHI_TYPES)
    assert all(isinstance(n, int) and n > 0 for n in result.counts.values())
    assert placeholder("NAME") == "[NAME]"


def test_redaction_is_frozen() -> None:
    result = redact("Mr Jones")
    with pytest.raises(ValidationError):
        result.text = "Mr Jones"  # type: ignore[misc]
