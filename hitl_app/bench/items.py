"""The medical questions the benchmark judges, and the mix of judgements a clinician gives them.

Each item is (question ~20 words, the model's answer ~50 words, a clinician's corrected answer
~50 words). Judgement ``i`` is given to ``ITEMS[i % len(ITEMS)]`` and is of kind
``MIX[i % len(MIX)]``; see ``judgements.py`` for the records and the training rows they yield.
"""

from __future__ import annotations

from typing import Literal

Kind = Literal["edit", "rank", "accept", "reject"]

# 20 judgements: 8 edits, 6 rankings of two candidates, 4 accepts, 2 rejects. A clinician edits
# or ranks most answers and accepts or rejects fewer outright. The kinds are spread so that every
# prefix is mixed: the quick run's 2 judgements are an edit and a ranking, so its round still
# runs both the SFT and the DPO stage.
MIX: tuple[Kind, ...] = (
    "edit", "rank", "accept", "edit", "rank", "edit", "reject", "accept", "edit", "rank",
    "edit", "accept", "rank", "edit", "reject", "rank", "edit", "accept", "rank", "edit",
)

# A rejection needs a reason; the same one serves every rejected answer.
REJECT_REASON = "Misses a red-flag symptom that needs urgent referral."

ITEMS: tuple[tuple[str, str, str], ...] = (
    (
        "A 58-year-old man has had crushing central chest pain for twenty minutes with sweating and nausea. What should happen first?",
        "This could be a heart attack. Call emergency services straight away, give 300 mg of aspirin to chew unless he is allergic, keep him resting, and record a 12-lead ECG as soon as possible. Do not let him drive to hospital. Watch his breathing, pulse and consciousness until help arrives.",
        "Treat this as a possible acute coronary syndrome. Call emergency services now, give 300 mg aspirin to chew if there is no allergy or active bleeding, and obtain a 12-lead ECG within ten minutes. Keep him seated and monitored, and be ready to start CPR and use a defibrillator if he collapses.",
    ),
    (
        "What is the usual maximum daily dose of paracetamol for a healthy adult, and when should that dose be reduced?",
        "For a healthy adult the usual maximum is 4 g in 24 hours, taken as 500 mg to 1 g every four to six hours. Reduce it for adults under 50 kg, heavy alcohol use, malnutrition or liver disease, and check other products for hidden paracetamol.",
        "A healthy adult may take 500 mg to 1 g every four to six hours, up to 4 g in 24 hours. Use a lower maximum, often 3 g or 15 mg/kg per dose, for adults under 50 kg, with liver disease, chronic alcohol use or poor nutrition. Combination cold remedies often contain paracetamol too.",
    ),
    (
        "Which symptoms in a young child with a fever should prompt urgent same-day medical review instead of care at home?",
        "Seek urgent review if the child is under three months with a temperature of 38 C or more, is floppy or hard to wake, has a rash that does not fade under pressure, breathes fast or with grunting, has a seizure, refuses fluids, or has fewer wet nappies than usual.",
        "Arrange urgent same-day review for any infant under three months with a temperature of 38 C or higher, and for any child who is drowsy or floppy, has a non-blanching rash, laboured breathing, a fit, signs of dehydration such as few wet nappies, or a fever lasting more than five days.",
    ),
    (
        "How can a clinician recognise a stroke quickly, and why does the exact time of symptom onset matter so much?",
        "Use the FAST check: face drooping, arm weakness, speech difficulty, time to call emergency services. Sudden vision loss, loss of balance or severe headache can also be signs. Record when the person was last seen well, because clot-busting treatment and clot retrieval are only offered within limited time windows.",
        "Look for sudden face drooping, arm or leg weakness, slurred or confused speech, loss of vision or balance, and call emergency services at once. Note the time the person was last known to be well: thrombolysis is usually given within 4.5 hours and thrombectomy within 6 to 24 hours in selected patients.",
    ),
    (
        "What are the first-line lifestyle measures and drug treatment for an adult with newly diagnosed type 2 diabetes?",
        "Start with structured education, a healthy diet, regular physical activity and weight loss where needed. Metformin is the usual first medicine, started at a low dose and increased slowly to limit stomach upset. Check kidney function first and review HbA1c after about three months to judge whether treatment needs to be intensified.",
        "Offer structured education, dietary advice, at least 150 minutes of activity a week and support to lose weight. Metformin is usually first-line if kidney function allows; an SGLT2 inhibitor is added early for people with heart failure, cardiovascular disease or high cardiovascular risk. Recheck HbA1c every three to six months until stable.",
    ),
    (
        "A patient taking warfarin asks whether they can use ibuprofen for their back pain. What should I advise them?",
        "Advise them to avoid ibuprofen and other NSAIDs, because combined with warfarin they raise the risk of stomach and other bleeding. Paracetamol at normal doses is usually a safer choice, though regular use can raise the INR, so their anticoagulation clinic should know. Heat, gentle activity and physiotherapy can also help.",
        "Ibuprofen and other NSAIDs should be avoided with warfarin because they increase the risk of gastrointestinal bleeding. Paracetamol is preferred for short courses; if it is taken regularly for more than a few days the INR should be checked. Topical treatments, heat and staying active are reasonable additions for back pain.",
    ),
    (
        "How should an adult with anaphylaxis after a bee sting be treated while waiting for the ambulance to arrive?",
        "Give intramuscular adrenaline 0.5 mg into the outer thigh straight away, using their auto-injector if they have one, and call emergency services. Lay them flat with legs raised, or sitting up if breathing is hard. Repeat adrenaline after five minutes if there is no improvement, and start CPR if they stop breathing.",
        "Call emergency services and give 0.5 mg intramuscular adrenaline into the mid outer thigh immediately, using an auto-injector if available. Remove the sting if visible. Keep them lying down with legs raised, or sitting if breathless, and do not let them stand. Repeat adrenaline after five minutes if symptoms persist or worsen.",
    ),
    (
        "What blood pressure level defines hypertension in adults, and how should the diagnosis be confirmed before starting treatment?",
        "A clinic reading of 140/90 mmHg or higher suggests hypertension. Confirm it with ambulatory monitoring, or home readings over several days if ambulatory monitoring is not possible, where an average of 135/85 mmHg or more confirms the diagnosis. Also check for target organ damage and estimate cardiovascular risk before deciding on treatment.",
        "Hypertension is suggested by a clinic reading of 140/90 mmHg or more. Confirm it with ambulatory or home blood pressure monitoring, where a daytime average of 135/85 mmHg or above confirms it. Then test urine, kidney function, lipids and HbA1c, record an ECG and assess cardiovascular risk to guide treatment.",
    ),
    (
        "Which inhaled medicines are usually used as a reliever and as a preventer for adults with persistent asthma?",
        "A reliever is usually a short-acting beta agonist such as salbutamol, used when symptoms start. A preventer is an inhaled corticosteroid such as beclometasone or budesonide, taken every day even when well. Many adults now use a combined budesonide and formoterol inhaler for both purposes. Check inhaler technique at every review.",
        "Many guidelines now prefer a combined inhaled corticosteroid and formoterol inhaler, such as budesonide-formoterol, used both daily and as needed for symptoms. Otherwise, a daily inhaled corticosteroid is the preventer and salbutamol is the reliever. Needing the reliever more than twice a week suggests poor control and should prompt a review.",
    ),
    (
        "What are the typical warning signs of sepsis in an adult, and what needs to be done within the first hour?",
        "Warning signs include fever or low temperature, a fast heart rate, fast breathing, low blood pressure, confusion, mottled skin and passing little urine. In the first hour take blood cultures, give broad-spectrum antibiotics, start intravenous fluids, measure lactate, give oxygen if needed and monitor urine output closely.",
        "Suspect sepsis with new confusion, a respiratory rate of 22 or more, systolic blood pressure of 100 mmHg or less, a high heart rate, mottled or ashen skin, or very little urine. Within one hour take blood cultures and lactate, give intravenous antibiotics and fluids, give oxygen if saturation is low, and escalate to senior review.",
    ),
    (
        "How long should a non-pregnant woman with an uncomplicated lower urinary tract infection usually take antibiotics?",
        "A three-day course is usually enough for uncomplicated lower urinary tract infection in non-pregnant women. Nitrofurantoin is a common first choice if kidney function is adequate, with trimethoprim as an option when resistance is unlikely. Advise fluids and pain relief, and review if symptoms worsen or have not improved within 48 hours.",
        "Non-pregnant women with uncomplicated cystitis usually need only three days of antibiotics. Nitrofurantoin is commonly first-line if eGFR is at least 45, or trimethoprim if resistance is unlikely; follow local guidance. Send a urine culture if symptoms recur or fail to settle, and seek urgent care for fever, loin pain or vomiting.",
    ),
    (
        "What advice should be given to a patient who is starting metformin about side effects and monitoring their kidneys?",
        "Explain that nausea, diarrhoea and stomach upset are common at first and usually settle. Taking tablets with meals and increasing the dose slowly helps, and a modified-release form may be better tolerated. Kidney function should be checked before starting and at least once a year, and more often if it is reduced.",
        "Warn that stomach upset and diarrhoea are common early on; taking it with food and building the dose up over weeks usually helps. Kidney function is checked before starting and every year. Advise them to stop it temporarily during severe vomiting, diarrhoea or dehydration, and to mention it before scans that use contrast.",
    ),
    (
        "When should a patient with a headache be referred urgently for brain imaging or emergency hospital assessment?",
        "Refer urgently for a sudden severe thunderclap headache, headache with fever and neck stiffness, new neurological symptoms, confusion, a headache after head injury, or a new headache in someone with cancer or a weakened immune system. A progressive headache that is worse on waking or with vomiting also needs prompt assessment.",
        "Send to emergency care for a thunderclap headache reaching peak intensity within a minute, headache with fever, neck stiffness or a rash, new weakness or confusion, reduced consciousness, or headache after trauma, particularly on anticoagulants. New headache over 50 with jaw pain suggests giant cell arteritis and needs same-day assessment.",
    ),
    (
        "How is dehydration assessed in an adult with diarrhoea and vomiting, and when is hospital care needed?",
        "Ask about fluid intake, urine output and dizziness, and look for a dry mouth, sunken eyes, fast heart rate and low blood pressure on standing. Most adults recover with oral fluids. Hospital care is needed if they cannot keep fluids down, are confused, have bloody diarrhoea, or have kidney disease or frailty.",
        "Assess thirst, urine output, dizziness on standing, dry mucous membranes, heart rate and postural blood pressure, and check kidney function and electrolytes if unwell. Oral rehydration solution is enough for most adults. Admit people who cannot keep fluids down, are confused, have bloody stools or severe pain, or are elderly, frail or immunosuppressed.",
    ),
    (
        "What are the common side effects of statins, and how should muscle pain in a patient taking a statin be managed?",
        "Common side effects include muscle aches, stomach upset, headache and raised liver enzymes. For muscle pain, check creatine kinase and thyroid function and ask about interacting drugs. If the creatine kinase is very high or the pain is severe, stop the statin; otherwise a pause, lower dose or different statin often helps.",
        "Muscle symptoms are the most common complaint, but most are not caused by the statin. Check creatine kinase, thyroid function and interacting medicines. Stop the statin if creatine kinase is over five times the upper limit or symptoms are severe. Otherwise pause it, then restart at a lower dose or with another statin.",
    ),
    (
        "Which signs suggest a deep vein thrombosis in the leg, and how is it usually investigated in primary care?",
        "Typical signs are swelling of one calf or leg, pain or tenderness along the deep veins, warmth and redness. Use the two-level Wells score to judge likelihood. If DVT is likely, arrange a proximal leg ultrasound scan; if unlikely, a D-dimer test helps exclude it. Start anticoagulation if the scan is delayed.",
        "Suspect DVT with one-sided leg swelling, calf tenderness, pitting oedema, warmth or dilated superficial veins. Apply the two-level Wells score: if likely, request a proximal leg vein ultrasound within four hours; if unlikely, do a D-dimer first. If imaging cannot be done promptly, give interim anticoagulation unless there is a contraindication.",
    ),
    (
        "How should low blood sugar be treated in a conscious adult with diabetes who feels shaky, sweaty and confused?",
        "Give 15 to 20 g of fast-acting sugar such as glucose tablets, a small glass of juice or sugary drink. Recheck blood glucose after 15 minutes and repeat if it is still below 4 mmol/L. Once it recovers, have a snack with longer-acting carbohydrate and look for the cause of the episode.",
        "If they can swallow safely, give 15 to 20 g of quick-acting carbohydrate, such as four or five glucose tablets or 150 to 200 ml of fruit juice. Recheck after 10 to 15 minutes and repeat up to three times. Then give a starchy snack. If they become drowsy or cannot swallow, call emergency services.",
    ),
    (
        "Which vaccinations are generally recommended each year for adults over 65 who have chronic lung disease?",
        "An influenza vaccine is recommended every autumn, and a COVID-19 booster is offered in seasonal campaigns according to current national advice. A pneumococcal vaccine is usually given once rather than yearly. RSV vaccination is now offered to older adults in many countries. Check local schedules, because eligibility differs between health systems.",
        "Annual influenza vaccination is recommended, and COVID-19 boosters are offered in seasonal campaigns depending on national policy. Pneumococcal vaccination is usually a single dose rather than yearly, and a one-off RSV vaccine is offered to older adults in several countries. Shingles vaccination may also be due. Always follow the local immunisation schedule.",
    ),
    (
        "A pregnant woman at 32 weeks reports a severe headache and blurred vision. What could this be, and what is needed?",
        "These symptoms could indicate pre-eclampsia, which can become dangerous quickly. She needs same-day assessment in the maternity unit, including blood pressure, urine protein and blood tests for liver function, kidney function and platelets. If her blood pressure is very high or she has other worrying symptoms, arrange emergency transfer.",
        "Severe headache and visual disturbance in late pregnancy suggest pre-eclampsia until proven otherwise. Check blood pressure and urine for protein at once and refer urgently to the obstetric assessment unit the same day. Ask about epigastric pain and swelling. Very high blood pressure or any seizure needs an emergency ambulance.",
    ),
    (
        "How should a clinician respond when a patient says they have been thinking about ending their own life?",
        "Take the statement seriously and stay calm. Ask directly about plans, means, intent and previous attempts, and about things that keep them safe. If there is immediate danger, do not leave them alone and arrange emergency care. Otherwise agree a safety plan, involve crisis or mental health services, and follow up soon.",
        "Thank them for telling you and ask openly about suicidal thoughts, plans, access to means, previous attempts and protective factors; asking does not increase risk. If they have intent or a plan, keep them safe and arrange urgent mental health or emergency assessment. Otherwise make a safety plan with them and arrange prompt follow-up.",
    ),
)
