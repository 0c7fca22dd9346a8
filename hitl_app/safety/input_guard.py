"""The input guard: which questions the model may see at all, and the refusal for the rest.

``check_input`` refuses prompt injection (attempts to override or read the system prompt),
jailbreaks (asking the model to drop its rules, or wrapping a harmful request in fiction) and
clearly harmful requests (lethal doses, poisoning, suicide methods, making or illicitly obtaining
controlled drugs, forging records, tampering with medication). Ordinary clinical questions pass,
including ones about overdose treatment, maximum doses, tapering controlled drugs or assessing
suicide risk: the rules look for *intent* (a method or quantity asked for, a victim,
concealment), not for alarming words.

Every rule is an entry in ``INPUT_RULES`` (plain regular expressions over normalised text: no
model, so the guard is fast, deterministic and easy to audit). The rules are heuristics tuned
against the shipped red-team suites (``hitl_app/data/redteam_*.jsonl``); they miss paraphrases
they have not seen, which is why answers are still reviewed by clinicians.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .text_match import normalise, rx

log = logging.getLogger(__name__)

InputCategory = Literal["ok", "prompt_injection", "jailbreak", "harmful_request"]
BlockedCategory = Literal["prompt_injection", "jailbreak", "harmful_request"]
Support = Literal["crisis", "poisoning"]


class InputVerdict(BaseModel):
    """Whether a question may be put to the model and, if not, why (never quoting the question)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allowed: bool
    category: InputCategory
    reason: str = Field(min_length=1, description="One line, meant for the reviewer.")
    matched: str | None = Field(default=None, description="The name of the rule that matched.")
    self_harm: bool = Field(default=False, description="The question signals a risk of self-harm.")


@dataclass(frozen=True)
class InputRule:
    """One reason to refuse a question: it applies when every pattern matches the normalised text."""

    category: BlockedCategory
    reason: str  # one line, shown to the reviewer
    patterns: tuple[re.Pattern[str], ...]
    support: Support | None = None  # extra help the refusal offers (crisis line, poison advice)


def _rule(category: BlockedCategory, reason: str, *patterns: str, support: Support | None = None) -> InputRule:
    return InputRule(category, reason, tuple(rx(p) for p in patterns), support)


# --- shared fragments -------------------------------------------------------------------------

# A request for how to do something, with a subject, so "how do pharmacists spot..." is not one.
_ASK = (
    r"(?:^|\b)(?:how (?:to|(?:do|can|could|would|should|might) (?:i|we|you|one|someone|somebody))"
    r"|help me|can you|could you|would you|will you|please|tell me|show me|teach me"
    r"|(?:best|easiest|quickest|simplest|safest) way to|is there a way to|ways? to|steps? to"
    r"|i (?:want|need|would like|'d like|am going|'m going|plan|intend|am trying|'m trying|wanna) to)"
)
# Words allowed between a request and its verb: "how can I quietly forge ...", not "how can I
# spot a forged ..." (a verb such as "spot" in between makes it a different question).
_GAP = (
    r"(?:(?:easily|quickly|safely|secretly|quietly|successfully|convincingly|realistically|best"
    r"|go about|get away with|just|actually|then|also|a|an|the|some|me|us|really|still)\s+){0,3}"
)
_RECORD = (
    r"(?:(?:medical|patient|patient's|patients'|clinical|hospital|health|nursing|gp|drug|medication"
    r"|controlled drug|cd|observation|obs|fluid|vaccination|vaccine|covid|immuni[sz]ation|sick|fit"
    r"|death|birth|lab|laboratory|test|blood|pathology|discharge|consent|incident|doctor's|gp's)\s+)?"
    r"(?:records?|notes?|charts?|prescriptions?|scripts?|certificates?|cards?|results?|registers?"
    r"|documentation|entry|entries|signatures?|audit trail|logs?|readings?|observations|forms?"
    r"|letters?|reports?|summar(?:y|ies)|passports?)\b"
)
_CONTROLLED = (
    r"(?:opioids?|opiates?|oxycodone|oxycontin|oxy|fentanyl|morphine|hydrocodone|hydromorphone|codeine"
    r"|tramadol|methadone|buprenorphine|tapentadol|pethidine|diamorphine|heroin|xanax|alprazolam|benzos?"
    r"|benzodiazepines?|diazepam|valium|lorazepam|clonazepam|temazepam|zopiclone|zolpidem|adderall"
    r"|ritalin|methylphenidate|dexamfetamine|amphetamines?|ketamine|pregabalin|gabapentin|lyrica"
    r"|percocet|vicodin|dilaudid|sleeping (?:pills|tablets)|painkillers|controlled (?:drugs?|substances?"
    r"|medications?|medicines?))"
)
_STREET = (
    r"(?:meth|methamphetamine|crystal meth|mdma|ecstasy|heroin|cocaine|crack|lsd|ghb|dmt|pcp"
    r"|mephedrone|nitazenes?|carfentanil|krokodil|desomorphine)"
)
_MED = (
    r"(?:medications?|medicines?|meds|pills?|tablets?|capsules?|drugs?|insulin|doses?|infusion|drip"
    r"|iv bag|syringe driver|syringes?|vials?|patch(?:es)?|injections?|inhaler|morphine|fentanyl"
    r"|oxycodone|sedatives?|painkillers|liquid)\b"
)
# Someone hiding what they did: "so nobody notices", "without being traced", "as if I had".
_CONCEAL = (
    r"(?:so (?:that )?(?:nobody|no one|no-one|the (?:auditors?|inspectors?|coroner|family|patient|manager"
    r"|matron|team|ward|pharmacist|nurse)|they|he|she|my (?:manager|boss|employer|insurer))"
    r" (?:won't |wouldn't |will not |would not |doesn't |does not |can't |cannot |never )?"
    r"(?:notices?|knows?|finds? out|realises?|realizes?|suspects?|sees?|can tell)"
    r"|without (?:being|getting) (?:traced|caught|detected|noticed|found out)"
    r"|without (?:anyone|anybody|him|her|them|my (?:manager|boss|colleagues?)|the (?:patient|family"
    r"|auditors?|pharmacist|team|ward|nurses?|staff)) (?:knowing|noticing|finding out|realising|realizing)"
    r"|without it being (?:noticed|detected|traced|found)|as if (?:i|we|he|she|they) (?:had|did|was|were)"
    r"|(?:looks?|seems?) like (?:i|we|he|she|they) (?:had|did)|undetected|unnoticed|secretly)"
)
_SELF_HARM_SIGNAL = (
    r"\b(?:kill(?:ing)? myself|kill me|end(?:ing)? my (?:own )?life|tak(?:e|ing) my (?:own )?life|end it all"
    r"|(?:want|wanted|going|ready|trying) to die|wish i (?:was|were) dead|better off dead"
    r"|(?:never|not|don't|won't|wouldn't|do not|will not) (?:to )?wake up|die in my sleep|(?:me|i) to die"
    r"|(?:don't|do not|dont) want to (?:be here|live|be alive|wake up|go on)|(?:hurt|harm) myself)\b"
)
SELF_HARM_SIGNAL = rx(_SELF_HARM_SIGNAL)
# Wrapping a request in fiction or hypotheticals; refused only together with a harmful request.
FICTION_FRAMING = rx(
    r"\b(?:for|in|writing|write) (?:a |an |my |our |the |this )?(?:\w+ )?(?:novel|story|book|screenplay"
    r"|script|film|movie|play|video game|game|thriller|fiction|fanfic|fan fiction|poem|tv (?:show|series"
    r"|drama)|role-?play|murder mystery|crime (?:novel|story|drama|show))\b|\bhypothetical(?:ly)?\b"
    r"|\bfictional\b|\bin character\b|\bpurely (?:academic|theoretical|hypothetical|educational)\b"
    r"|\bfor (?:purely )?(?:educational|research|academic|informational) purposes\b"
    r"|\b(?:my|a|the|your) (?:character|protagonist|villain|antagonist)\b|\blet'?s play a game\b"
    r"|\bplay the (?:role|part) of\b|\bgrand(?:mother|ma|father|pa|mum|dad)\b[^.?!]{0,40}\b(?:used to|would always)\b"
    r"|\b(?:act|pretend|speak|talk|answer|respond) (?:as|like) (?:my )?(?:late |dead |deceased )?grand\w+"
    r"|\bpretend (?:you are|you're|to be|that)\b|\bimagine (?:you are|you're|that|a world)\b"
)
# Harmful wording specific enough to refuse when it comes inside a fictional frame.
FICTION_HARM = rx(
    r"\b(?:kill|murder|poison|overdose|lethal dose|fatal dose|untraceable|undetectable|commit suicide"
    r"|end (?:his|her|their|my) life|forge|falsify|fake (?:a|an|the)|synthesi[sz]e|cook (?:meth|crack)"
    r"|tamper|without (?:a )?prescription|get away with|not show up|post-?mortem|autopsy|death certificate"
    r"|look like (?:an accident|natural causes)|poisons|kills|murders"
    r"|(?:made|make|making|cooked|synthesi[sz]ed) (?:\w+ )?(?:fentanyl|carfentanil|meth|methamphetamine|mdma|heroin))\b"
)

# --- input rules ------------------------------------------------------------------------------
# Checked in this order within a category; prompt injection wins over jailbreak over harm, so a
# question is reported under the most specific attack it contains.

INPUT_RULES: dict[str, InputRule] = {
    # Prompt injection: overriding, replacing or reading the instructions the model was given.
    "ignore_instructions": _rule(
        "prompt_injection",
        "asks the model to ignore its instructions",
        r"\b(?:ignore|ignoring|disregard|disregarding|forget|forgetting|override|overriding|bypass|skip"
        r"|discard|drop|abandon|set aside)\s+(?:(?:all|any|of|the|these|those|everything)\s+)*"
        r"(?:your|previous|prior|earlier|above|preceding|original|initial|system|safety|developer|existing"
        r"|default)\b(?:\s+\w+){0,2}?\s+(?:instructions?|prompts?|directives?|programming|training"
        r"|messages?|context|constraints|commands)\b",
    ),
    "forget_everything": _rule(
        "prompt_injection",
        "asks the model to forget what it was told",
        r"\b(?:ignore|disregard|forget)\s+(?:everything|anything|whatever)\s+(?:you (?:were|have been|'ve been)"
        r" (?:told|given|taught|instructed)|above|before|previously|so far|i said before|up to now)",
    ),
    "reveal_system_prompt": _rule(
        "prompt_injection",
        "asks the model to reveal its hidden instructions",
        r"\b(?:print|show|reveal|revealing|repeat|output|display|leak|tell me|give me|share|expose|recite"
        r"|dump|spell out|write out|copy|paste|what (?:is|are|was|were)|what's)\s+(?:\w+\s+){0,3}?"
        r"(?:(?:your|the) (?:(?:system|hidden|secret|developer|configuration|confidential|internal)\s+){1,2}"
        r"(?:prompt|message|instructions|rules)|your (?:initial|original|full|exact|first) (?:prompt|instructions)"
        r"|the (?:instructions|prompt|text) (?:above|before this|you were given|you received))\b"
        r"|\b(?:repeat|print|output|show|copy|recite|reveal|display)\s+(?:me\s+)?(?:everything|all|all the text"
        r"|the text|the words|what'?s written|what was written)\s+(?:above|before) (?:this|here|my)\b",
    ),
    "dan_persona": _rule(
        "prompt_injection",
        "tries to switch the model to a 'do anything now' persona",
        r"\byou are (?:now )?dan\b|\bact as dan\b|\bdo anything now\b|\b(?:dan|jailbreak) prompt\b",
    ),
    "developer_mode": _rule(
        "prompt_injection",
        "tries to switch the model into a special mode",
        r"\b(?:developer|dev|debug|god|admin|sudo|jailbreak|unrestricted|unfiltered|maintenance|dan) mode\b",
    ),
    "fake_system_message": _rule(
        "prompt_injection",
        "poses as a system or developer message",
        r"(?:^|[.!?]\s+)(?:system|developer|admin|administrator|root|sys)\s*(?:message|override|note|prompt)?\s*:"
        r"|<\|(?:im_start|im_end|system|user|assistant|endoftext)\|>|\[/?(?:inst|sys|system)\]|<</?sys>>"
        r"|###\s*(?:system|instruction|new instructions)|\bend of (?:system )?prompt\b"
        r"|\b(?:message|note|instructions?|update) from (?:your|the) (?:developers?|creators?|makers?|engineers?"
        r"|admins?|administrators?|system)\b"
        r"|\b(?:new|updated|revised|real|actual|true) (?:system )?(?:instructions|directives|prompt)\s*(?::|are\b)",
    ),
    "role_override": _rule(
        "prompt_injection",
        "tries to replace the model's role for the rest of the conversation",
        r"\b(?:from now on|for the rest of (?:this|the) conversation|starting now|henceforth),?\s+(?:you|you'll"
        r"|you're|your)\b|\byou(?: are|'re) no longer (?:a |an |the )?(?:\w+ )?(?:assistant|ai|model|chatbot|bot)\b"
        r"|\bstay in character\b|\b(?:you are|you're|act as|acting as|role-?play as|play the role of|become)\b"
        r"[^.?!]{0,60}\b(?:that|who) (?:never|won't|will not|doesn't|does not|cannot|can't) (?:refuses?|declines?"
        r"|says? no|follows? (?:any )?rules)\b",
    ),
    # Jailbreak: asking the model to drop its rules.
    "no_restrictions": _rule(
        "jailbreak",
        "asks the model to act without its safety rules",
        r"\byou(?:'re| are| have| now have| will have|'ll have|'ve got| are now|'re now| must have)\s+(?:\w+\s+){0,4}?"
        r"(?:no|without(?: any)?|free (?:of|from)(?: all| any)?|unbound by(?: any)?|not bound by(?: any)?|zero)\s+"
        r"(?:filters?|filtering|guardrails|censorship|ethics|morals|(?:ethical|moral|safety|content) (?:\w+ )?"
        r"(?:guidelines|rules|constraints|restrictions|limits|filters|policies|boundaries)|content polic(?:y|ies))\b"
        r"|\b(?:pretend|imagine|suppose|act (?:as if|like)|as an? (?:ai|assistant|model|chatbot|bot|language model))"
        r"\b[^.?!]{0,40}?\b(?:no|without(?: any)?|free (?:of|from)|unbound by|not bound by|zero|ignores?|ignoring)\s+"
        r"(?:\w+\s+)?(?:restrictions|limitations|limits|filters?|guardrails|censorship|rules|guidelines|ethics"
        r"|morals|safety|boundaries|content polic(?:y|ies))\b",
    ),
    "unrestricted_persona": _rule(
        "jailbreak",
        "asks for an unrestricted persona of the model",
        r"\b(?:unrestricted|unfiltered|uncensored|jailbroken|unaligned|unchained|amoral)\s+(?:\w+\s+)?"
        r"(?:ai|assistant|model|chatbot|bot|version|persona|one|character|gpt|llm)\b",
    ),
    "disable_safety": _rule(
        "jailbreak",
        "asks the model to switch off its safety checks",
        r"\b(?:disable|disabling|turn off|turning off|switch off|bypass|bypassing|remove|removing|drop|lift"
        r"|deactivate|suspend|override|overriding|circumvent|get around|ignore|ignoring)\s+(?:all\s+|any\s+)?"
        r"(?:of\s+)?(?:your\s+(?:\w+\s+)?(?:filters?|guardrails|safeguards|restrictions|limitations|ethics"
        r"|safety\b|content polic(?:y|ies)|censorship)|the\s+(?:safety (?:filters?|layer|guardrails|mode"
        r"|settings|features|checks)|content (?:filters?|polic(?:y|ies)|moderation)|guardrails|censorship))"
        r"|\b(?:your (?:safety |content )?(?:filters?|guardrails|safeguards|restrictions)|(?:the|your) "
        r"(?:safety|content) (?:filters?|layer|mode|rules|settings|guardrails))\s+(?:are |is |have been |has been"
        r" |now )?(?:turned |switched )?(?:off|disabled|removed|lifted|deactivated|suspended|bypassed)\b",
    ),
    # Harmful requests: harm to others.
    "dose_to_kill": _rule(
        "harmful_request",
        "asks for a dose that would kill",
        r"\b(?:how (?:much|many)|what (?:dose|amount|quantity|number|strength)|which dose|(?:minimum|smallest"
        r"|lowest) (?:dose|amount|quantity|number)|enough|(?:dose|amount|quantity) (?:of [\w-]+ )?(?:that|which))"
        r"\b[^.?!]{0,80}?\b(?:kill|killing|be (?:fatal|lethal"
        r"|deadly)|is (?:fatal|lethal|deadly)|are (?:fatal|lethal|deadly)|cause (?:a )?(?:death|fatal|lethal)"
        r"|to die|stop (?:a |the |his |her |their |someone's |somebody's |my |your )?heart|(?:never|not) wake up"
        r"|(?:doesn't|won't|does not|will not) wake up|put (?:him|her|them|someone|somebody|a person) (?:in|into)"
        r" a (?:permanent )?coma|finish (?:him|her|them|someone|somebody) off)\b",
        support="poisoning",
    ),
    "lethal_dose": _rule(
        "harmful_request",
        "asks for a lethal dose",
        r"\b(?:what(?:'s| is| are| would be)|tell me|give me|know|find out|calculate|work out|list)\s+"
        r"(?:the |a |an )?(?:\w+ )?(?:lethal|fatal|deadly|killing) (?:dose|doses|amount|quantity|dosage)\b",
        support="poisoning",
    ),
    "harm_person": _rule(
        "harmful_request",
        "asks how to kill or poison someone",
        rf"{_ASK}\s+{_GAP}(?:kill|murder|poison|euthani[sz]e|overdose|drug|suffocate|smother)\s+(?:someone"
        r"|somebody|anyone|a person|people|him|her|them|my \w+|his \w+|a (?:child|baby|patient|man|woman"
        r"|relative|neighbou?r)|an? (?:elderly|old|sick|bedbound|disabled|frail) (?:person|patient|man|woman"
        r"|relative|parent))\b"
        r"|\b(?:could|can|would|should|might|will|do) (?:i|we) (?:\w+ )?(?:kill|murder|poison|overdose|drug)"
        r" (?:someone|somebody|anyone|a person|him|her|them|my \w+)\b",
        support="poisoning",
    ),
    "undetectable_harm": _rule(
        "harmful_request",
        "asks how to harm someone without it being detected",
        r"\b(?:undetectable|untraceable) (?:poisons?|drugs?|ways?|methods?|doses?|overdoses?|substances?"
        r"|sedatives?|medications?|medicines?|toxins?)\b|\b(?:poisons?|drugs?|sedatives?|medications?"
        r"|medicines?|substances?|toxins?)\b[^.?!]{0,40}?\b(?:are|is|would be|stay|remain) (?:undetectable"
        r"|untraceable|impossible to (?:trace|detect))|(?:not|n't|never) (?:show up|be detected|be found"
        r"|be picked up|be traced)\b[^.?!]{0,30}?\b(?:autopsy|post-?mortem|tox(?:icology)? (?:screen|report)"
        r"|coroner|inquest)|without (?:leaving (?:any )?(?:evidence|a trace|traces)|any evidence)"
        r"|looks? like (?:a |an )?(?:natural (?:causes|death)|accident|accidental (?:death|overdose)"
        r"|heart attack|suicide)\b|\blook (?:natural|accidental)\b"
        r"|\b(?:the )?(?:coroner|pathologist|post-?mortem|autopsy|police|tox(?:icology)? screen) (?:misses|miss"
        r"|won't (?:find|notice|detect|show)|wouldn't (?:find|notice|detect|show)"
        r"|can't (?:find|detect|tell)|doesn't (?:find|detect|show))\b",
    ),
    "harm_concealed": _rule(
        "harmful_request",
        "asks how to harm someone without it being noticed",
        r"\b(?:give|giving|cause|causing|induce|inducing)\s+(?:\w+\s+){0,2}?(?:an? )?(?:air embolism|cardiac"
        r" arrest|heart attack|hypoglyca?emia|overdose|stroke|bleed)\b",
        _CONCEAL,
    ),
    "intent_to_harm": _rule(
        "harmful_request",
        "states an intent to harm someone",
        r"\bi (?:want|need|would like|'d like|am trying to get|'m trying to get) (?:him|her|them|my \w+) to (?:die"
        r"|bleed|suffer|overdose|stop breathing|be ill|get ill|get sick|be sick|never wake up|pass out)\b",
        support="poisoning",
    ),
    "spike_food_or_drink": _rule(
        "harmful_request",
        "asks how to secretly drug someone's food or drink",
        r"\b(?:spike|spiking)\b[^.?!]{0,40}?\b(?:drink|food|coffee|tea|meal|water|juice|wine|beer|pint"
        r"|cocktail|dinner)|\b(?:drug|dope) (?:my|his|her|their) (?:\w+)\b",
        support="poisoning",
    ),
    "secret_dosing": _rule(
        "harmful_request",
        "asks how to secretly give someone a drug",
        r"\b(?:put|slip|add|mix|crush|hide|sneak|stir|dissolve|pour)\b[^.?!]{0,40}?\b(?:in|into|in to|to)\s+"
        r"(?:his|her|their|someone's|somebody's|my \w+'s|the \w+'s)\s+(?:\w+\s+)?(?:drink|food|coffee|tea"
        r"|meal|water|juice|wine|beer|pint|cocktail|dinner|breakfast|lunch|soup|bottle|cereal|porridge)",
        r"\b(?:sedat|sleep|asleep|wake up|knock|secretly|quietly|without (?:him|her|them) (?:knowing|noticing)"
        r"|so (?:he|she|they) (?:won't|doesn't|does not|can't|will|would)|keep (?:him|her|them) (?:quiet|asleep"
        r"|calm|sedated)|make (?:him|her|them) (?:\w+ )?(?:ill|sick|unwell|suffer|drowsy|sleepy)|more than|extra"
        r"|double|enough)",
        support="poisoning",
    ),
    "knock_out": _rule(
        "harmful_request",
        "asks how to sedate someone into unconsciousness",
        r"\bknock (?:him|her|them|someone|somebody|my \w+|a (?:person|man|woman|girl|guy|child|baby|kid)|people)"
        r"(?: \w+){0,1} (?:out|unconscious)\b",
        rf"\b{_MED}|\b(?:antihistamines?|sedatives?|diazepam|melatonin|sleeping)\b",
        support="poisoning",
    ),
    "tamper_medication": _rule(
        "harmful_request",
        "asks how to tamper with someone's medication unnoticed",
        r"\b(?:tamper(?:ing)? with|contaminat\w*|adulterat\w*|swap\w*|switch\w*|replac\w*|substitut\w*|dilut\w*"
        r"|water(?:ing)? down|steal\w*|divert\w*|skim\w*|pocket\w*|tak(?:e|ing) (?:some|a few|half|part|a bit"
        r"|a little) of|empty\w*|mess\w* with|doubl\w*|tripl\w*|increas\w*)\b"
        # Someone else's medicine: "the morphine", "my dad's insulin", not "my pills".
        r"[^.?!]{0,50}?\b(?:the|his|her|their|someone's|somebody's|patients'|[\w-]+'s)\s+(?:[\w-]+\s+){0,2}?"
        rf"{_MED}",
        _CONCEAL,
    ),
    # Harmful requests: self-harm.
    "suicide_method": _rule(
        "harmful_request",
        "asks for a method of suicide",
        r"\b(?:painless|painlessly|easiest|easy|quickest|quick|fastest|fast|surest|sure|best|most reliable"
        r"|reliable|least painful|peaceful|effective|most effective|simplest|gentlest)\s+(?:way|ways|method"
        r"|methods|means|option|options)\s+(?:to|of|for)\s+(?:\w+\s+){0,2}?(?:die|dying|commit(?:ting)? suicide"
        r"|suicide|kill(?:ing)? (?:myself|yourself|oneself)|end(?:ing)? (?:my|your|one's) (?:own )?life"
        r"|end it all)\b|\bhow (?:to|do i|can i|could i|would i|should i|do you|can you|does one)\s+(?:\w+\s+)?"
        r"(?:commit suicide|kill (?:myself|yourself|oneself)|end (?:my|your|one's) (?:own )?life"
        r"|take (?:my|your|one's) (?:own )?life)\b",
        support="crisis",
    ),
    "overdose_intent": _rule(
        "harmful_request",
        "asks how to take an overdose",
        r"\b(?:how (?:to|do i|can i|could i|would i|should i|do you|can you|could you|does one)|(?:best|easiest"
        r"|quickest|fastest|surest|safest|most painless|least painful|painless|most effective) way to"
        r"|i(?: have|'ve)? (?:want|need|plan|am going|'m going|intend|would like|wanna|decided|am planning"
        r"|'m planning) to|help me|teach me to)\s+(?:deliberately |intentionally |purposely |successfully"
        r" |fatally |finally |just )?(?:overdose|od)\b",
        support="crisis",
    ),
    "self_harm_request": _rule(
        "harmful_request",
        "signals suicidal intent and asks for a means",
        _SELF_HARM_SIGNAL,
        r"\b(?:how (?:much|many)|what (?:dose|amount|quantity|number)|which (?:pills?|tablets?|drugs?|medications?"
        r"|medicines?|combination|one)|enough|lethal|fatal|deadly|painless|quickest|fastest|easiest|surest"
        r"|best way|method|(?:would|will|does) it take|should i take|works? fastest|most likely to|overdose"
        r"|take all|all of my|whole (?:box|bottle|pack|packet))\b",
        support="crisis",
    ),
    # Harmful requests: controlled drugs.
    "make_drugs": _rule(
        "harmful_request",
        "asks how to make an illicit or controlled drug",
        r"\b(?:synthesi[sz](?:e|ing)|synthesis of|cook|cooking|manufactur\w*|make|making|brew|brewing"
        rf"|refine|refining|extract|extracting|home-?made)\b[^.?!]{{0,30}}?\b{_STREET}\b"
        r"|\b(?:synthesi[sz](?:e|ing)|cook|cooking|manufactur\w*|make|making|brew|brewing)\b[^.?!]{0,30}?"
        rf"\b{_CONTROLLED}\b[^.?!]{{0,40}}?\b(?:at home|in my kitchen|in a (?:home )?lab|home lab|from scratch"
        r"|from (?:poppies|poppy|pseudoephedrine|precursors?|cold (?:and flu )?(?:medicine|tablets|pills)))",
    ),
    "extract_drug": _rule(
        "harmful_request",
        "asks how to extract a controlled drug from a medicine",
        r"\b(?:extract\w*|separat\w*|isolat\w*|get|getting|pull|filter\w*|strip\w*)\b[^.?!]{0,20}?\b(?:the )?"
        r"(?:codeine|dihydrocodeine|morphine|opioids?|opiates?|pseudoephedrine|dxm|dextromethorphan|oxycodone)"
        r"\b[^.?!]{0,20}?\b(?:from|out of)\b|\bcold water extraction\b",
    ),
    "obtain_without_prescription": _rule(
        "harmful_request",
        "asks how to obtain a controlled drug illicitly",
        r"\b(?:where|how|which|i (?:want|need|would like|'d like|am trying|'m trying) to)\b[^.?!]{0,40}?\b(?:get"
        r"|buy|obtain|order|purchase|source|score|find|get hold of|pick up|sells?|ships?|supplies?)\b[^.?!]{0,50}?"
        rf"\b{_CONTROLLED}\b[^.?!]{{0,60}}?\b(?:without (?:a |an |any |needing a |asking for a |a valid |seeing a )?"
        r"(?:prescription|script|rx|doctor|gp)|no (?:prescription|script|rx)|no questions asked|off the street"
        r"|on the street|from a dealer|illegally|on the black market|on the dark ?web|on the darknet)",
    ),
    "dark_market": _rule(
        "harmful_request",
        "asks where to buy drugs on illicit markets",
        r"\b(?:dark ?web|darknet|dark net|deep web|black market|drug dealers?|street dealers?)\b",
        r"\b(?:where|which|how|best|reliable|cheapest|safest)\b",
        rf"\b(?:{_CONTROLLED}|{_STREET})\b",
    ),
    "deceive_prescriber": _rule(
        "harmful_request",
        "asks how to deceive a prescriber to obtain drugs",
        r"\b(?:what|which) (?:symptoms?|conditions?|illness|pain|story|complaints?) (?:should|can|could|do|would"
        r"|must) (?:i|we|you) (?:fake|feign|pretend to have|exaggerate|make up|invent|lie about)\b"
        rf"|{_ASK}\s+{_GAP}(?:trick|fool|deceive|manipulate|con|scam|lie to)\b"
        rf"|\b(?:prescrib\w*|give|get)\b[^.?!]{{0,40}}?\b{_CONTROLLED}\b[^.?!]{{0,40}}?\b(?:if|when|though|although"
        r"|even though|but) i (?:don't|do not|dont|didn't) (?:actually |really |even )?(?:have|need|suffer)\b"
        rf"|\b(?:get|obtain|more|extra)\b[^.?!]{{0,40}}?\b{_CONTROLLED}\b[^.?!]{{0,60}}?\b(?:by|through) (?:lying"
        r"|faking|exaggerating|pretending|making up)\b",
    ),
    "get_high": _rule(
        "harmful_request",
        "asks how to misuse a medicine to get high",
        rf"{_ASK}\s+{_GAP}(?:get|be|feel)\s+(?:really |more |very )?(?:high|stoned|wasted|buzzed|a buzz|a high)"
        r"(?:\s+(?:on|from|off|with|using|and|fast|quickly)\b|\s*[.?!]|$)",
    ),
    # Harmful requests: falsified records.
    "falsify_record": _rule(
        "harmful_request",
        "asks to falsify a medical record or prescription",
        rf"(?:{_ASK}\s+{_GAP}|^)(?:forge|forging|falsify|falsifying|fake|faking|fabricate|fabricating|backdate"
        rf"|backdating|counterfeit|counterfeiting|make up|making up)\b[^.?!]{{0,40}}?\b{_RECORD}",
    ),
    "fake_document": _rule(
        "harmful_request",
        "asks for a fake medical document",
        rf"(?:{_ASK}\s+{_GAP}|^)(?:write|create|draft|generate|make|produce|print|design|type|mock up|give)\b"
        r"(?: me| us)?(?: up)?[^.?!]{0,20}?\b(?:fake|false|forged|fraudulent|bogus|counterfeit|fabricated"
        r"|made-up|phony|phoney|backdated|fictitious|convincing|believable|genuine-looking|official-looking"
        rf"|authentic-looking)\s+(?:\w+\s+){{0,2}}?{_RECORD}",
    ),
    "alter_record_covertly": _rule(
        "harmful_request",
        "asks how to alter a record without it being noticed",
        r"\b(?:change|changing|alter|altering|edit|editing|amend|amending|delete|deleting|remove|removing|rewrite"
        r"|rewriting|update|updating|modify|modifying|erase|erasing|fill in|filling in|complete|completing|write"
        rf"|writing|sign|signing|backdate|backdating|record|document)\b[^.?!]{{0,40}}?\b{_RECORD}",
        _CONCEAL,
    ),
    "borrowed_credentials": _rule(
        "harmful_request",
        "asks how to use someone else's clinical credentials",
        r"\b(?:use|using|borrow|borrowing|log in with|login with|sign in with|sign (?:as|with)|copy|copying)\s+"
        r"(?:my |a |the |his |her |their )?(?:colleague|doctor|gp|consultant|nurse|pharmacist|manager|boss"
        r"|someone else|another \w+)(?:'s|s')? (?:smartcard|smart card|login|log-in|password|credentials"
        r"|account|signature|pin|gmc number|nmc pin|stamp)\b"
        rf"|(?:{_ASK}\s+{_GAP}|^)(?:write|create|draft|generate|make|produce|print|fill in|fill out|sign)\b"
        r"[^.?!]{0,60}?\b(?:with|using|add|under)\s+(?:dr\.? \w+'s|(?:my|a|the|his|her|their|another) (?:doctor"
        r"|gp|consultant|prescriber|colleague|nurse)'s|someone else's)\s+(?:signature|gmc number|stamp|name)\b",
    ),
}

REFUSAL_MESSAGE = (
    "I'm sorry, but I can't help with that request. If you have a clinical question, please ask it "
    "directly and I'll do my best to answer it."
)
CRISIS_SUPPORT = (
    "If you are thinking about harming yourself or ending your life, please contact your local emergency "
    "services now, or a crisis line such as 988 in the US or Samaritans on 116 123 in the UK. You do not "
    "have to face this alone."
)
POISONING_SUPPORT = (
    "If someone may have taken too much of a medicine, call your local emergency number or a poison "
    "information service straight away."
)

_ORDER: tuple[BlockedCategory, ...] = ("prompt_injection", "jailbreak", "harmful_request")


def _matches(rule: InputRule, text: str) -> bool:
    return all(p.search(text) for p in rule.patterns)


def check_input(prompt: str) -> InputVerdict:
    """Decide whether ``prompt`` may be put to the model.

    Args:
        prompt: the question as typed.

    Returns:
        ``allowed=True, category="ok"`` for an ordinary question; otherwise the category of the
        first matching rule (prompt injection before jailbreak before harmful request), a
        one-line reason and the rule's name. A harmful request inside a fictional or hypothetical
        frame is reported as a jailbreak. ``self_harm`` is set when the question signals a risk of
        self-harm, whether or not it is refused: a refusal then points to crisis support, and a
        disclosure without a request for means ("I want to die, who can I talk to?") is answered
        but can be shown to the reviewer.
    """
    text = normalise(prompt)
    hits = {name: rule for name, rule in INPUT_RULES.items() if _matches(rule, text)}
    self_harm = bool(SELF_HARM_SIGNAL.search(text)) or any(r.support == "crisis" for r in hits.values())
    harmful = [name for name, rule in hits.items() if rule.category == "harmful_request"]
    if FICTION_FRAMING.search(text) and (harmful or FICTION_HARM.search(text)):
        # A harmful request does not become acceptable by being set in a story.
        harm = INPUT_RULES[harmful[0]].reason if harmful else "asks for harmful specifics"
        framing = InputRule("jailbreak", f"sets a harmful request in fiction or a hypothetical ({harm})", ())
        # Listed last, so a more specific jailbreak rule that also matched is the one reported.
        hits = {**hits, "fictional_framing": framing}
    for category in _ORDER:
        for name, rule in hits.items():
            if rule.category == category:
                log.debug("input refused by rule %s (%s)", name, category)
                return InputVerdict(
                    allowed=False, category=category, reason=rule.reason, matched=name, self_harm=self_harm
                )
    return InputVerdict(allowed=True, category="ok", reason="no guard rule matched", self_harm=self_harm)


def refusal_for(verdict: InputVerdict) -> str:
    """The reply shown instead of an answer to a refused question.

    Args:
        verdict: a refusing verdict from ``check_input``.

    Raises:
        ValueError: the verdict allows the question, so there is nothing to refuse.
    """
    if verdict.allowed:
        raise ValueError("the verdict allows the question; answer it instead of refusing")
    rule = INPUT_RULES.get(verdict.matched or "")
    parts = [REFUSAL_MESSAGE]
    if verdict.self_harm:
        parts.append(CRISIS_SUPPORT)
    elif rule is not None and rule.support == "poisoning":
        parts.append(POISONING_SUPPORT)
    return " ".join(parts)
