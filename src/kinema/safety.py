"""Prompt safety: refuse prompts asking for content Kinema must not generate.

`check_prompt(prompt)` raises `KinemaError(code="content_policy_violation", param="prompt")` naming the
category (never echoing the words that matched). The filter is a blocklist, so it is readable and
predictable:
- Prompts are normalised against evasion: case, accents, look-alike letters, zero-width characters,
  leetspeak digits and symbols inside words ("s3x", "k1ll"), separators between letters ("n.u.d.e",
  "n u d e", "nu-de") and stretched letters ("nuuude": every pattern letter matches a run of itself).
- Patterns match whole words only, so "Scunthorpe", "cocktail", "killer whale" and "bloodhound" pass.
- Phrases in which a listed word means something harmless ("cum laude", "a corpse flower", "a photographer
  shoots a portrait", "suicide prevention") are taken out before the blocklist is read (HARMLESS).

Pattern syntax (BLOCKLIST, MINORS): lower-case words separated by single spaces; `*` continues a word
with any letters; `(a|b|)` offers alternatives (an empty one makes the group optional).
Set KINEMA_SAFETY=off to disable the default filter (research on a trusted machine only).
"""

from __future__ import annotations

import functools
import os
import re
import unicodedata
from collections.abc import Iterable

from kinema.errors import KinemaError

_PEOPLE = ("(a |the |)(man|men|woman|women|person|people|child|children|kid|kids|baby|boy|girl|him|her|them|"
           "crowd|civilians)")
_ADULT = "(woman|women|man|men|girl|girls|boy|boys|body|bodies|person|people|lady|ladies|teen|teens|child|children)"

# Category -> patterns, checked in this order (the first category that matches is reported).
BLOCKLIST: dict[str, list[str]] = {
    "sexual content involving minors": [
        "child porn*", "kiddie porn*", "jailbait", "loli", "lolicon", "shotacon", "pedo", "pedos",
        "pedophil*", "paedo", "paedophil*", "csam", "underage (sex*|nude*|naked|porn*)",
    ],
    "sexual content": [
        "nude", "nudes", "nudity", "nudist*", f"naked {_ADULT}", "topless", "porn*", "xxx", "nsfw", "sex",
        "sexy", "sexual*", "sex scene", "erotic*", "hentai", "orgy", "orgies", "orgasm*", "masturbat*",
        "blowjob*", "handjob*", "genital*", "penis*", "vagina*", "boobs", "tits", "nipples", "stripper*",
        "striptease", "strip tease", "fetish*", "bdsm", "onlyfans", "cum", "cunt", "rape", "raped", "raping",
        "rapist*", "undress(ed|ing) (a |the |)" + _ADULT, _ADULT + " (is |)undress(ed|ing)",
    ],
    "terrorism or weapons of mass destruction": [
        "terrorist*", "terrorism", "suicide bomb*", "car bomb*", "pipe bomb*", "dirty bomb*", "nail bomb*",
        "(make|making|build|building|assemble|assembling) (a |an |)(bomb|bombs|explosive*|ied)",
        "nerve agent*", "sarin", "vx gas", "anthrax", "ricin", "bioweapon*", "biological weapon*",
        "chemical weapon*", "nuclear weapon*", "weapon* of mass destruction", "mass shooting*",
        "school shooting*", "al qaeda", "jihadi*", "hijack* (a |the |)(plane|airliner|jet)",
        "isis (fighter*|flag*|militant*|soldier*|terror*|propaganda|recruit*|attack*|execution*|beheading*)",
        "(join|joins|joined|joining) isis",
    ],
    "graphic violence": [
        "gore", "gory", "gruesome", "behead*", "decapitat*", "dismember*", "disembowel*", "eviscerat*",
        "mutilat*", "massacre*", "genocide", "bloodbath", "blood bath", "blood (splatter*|spatter*|soaked)",
        "pool of blood", "covered in blood", "severed (head|heads|limb|limbs|arm|arms|leg|legs)",
        "entrails", "guts spill*", "brains (splatter*|blown out)", "torture*", "corpse*", "dead bod(y|ies)",
        "assassinat*", "lynch*", "execution style", "slit* (his|her|their|a|someone s) throat*",
        "(kill|kills|killed|killing|murder|murders|murdered|murdering|stab|stabs|stabbed|stabbing|shoot|"
        "shoots|shot|shooting|strangle|strangles|strangled|strangling|behead) " + _PEOPLE,
        _PEOPLE + " (is |was |gets |got |being |)(shot|stabbed|strangled|beheaded) (dead|to death|in the (head|"
        "chest|face|back))",
    ],
    "self-harm": [
        "suicid*", "self harm*", "selfharm*", "self injur*", "kill (myself|himself|herself|themselves|yourself)",
        "(cut|cuts|cutting|slit|slits|slitting) (my|his|her|their|your) (wrist|wrists|arm|arms)",
        "hang* (myself|himself|herself|themselves|yourself)", "overdos*", "anorexi*", "pro ana",
    ],
    "hateful slurs": [
        "nigger*", "nigga", "niggas", "faggot*", "fag", "fags", "kike", "kikes", "spic", "spics", "chink",
        "chinks", "wetback*", "tranny", "trannies", "retard", "retards", "raghead*", "towelhead*", "gook",
        "gooks", "beaner*", "paki", "pakis", "sand nigger*", "heil hitler", "white power", "gas the jews",
        "kill all (jews|muslims|christians|blacks|whites|gays|immigrants)",
    ],
    "real people (deepfakes)": [
        "joe biden", "biden", "donald (j |john |)trump", "president trump", "barack obama", "obama", "michelle obama",
        "kamala harris", "hillary clinton", "bill clinton", "vladimir putin", "putin", "xi jinping",
        "kim jong un", "emmanuel macron", "president macron", "volodymyr zelensky", "zelensky", "zelenskyy",
        "narendra modi", "angela merkel", "merkel", "olaf scholz", "rishi sunak", "keir starmer",
        "boris johnson", "king charles", "pope francis", "pope leo", "benjamin netanyahu", "netanyahu",
        "recep erdogan", "erdogan", "elon musk", "mark zuckerberg", "jeff bezos", "bill gates",
        "taylor swift", "beyonce", "oprah winfrey", "tom cruise", "keanu reeves", "scarlett johansson",
        "emma watson", "kim kardashian", "cristiano ronaldo", "lionel messi",
    ],
}
# Phrases where a blocked word is harmless; they are blanked out before the blocklist is read. Each is narrow (what
# follows or precedes the word is named), so "nude lipstick" passes but "a nude woman" does not.
HARMLESS = [
    "(summa |magna |)cum laude", "nipple* of (a |the |)(baby |)bottle*", "(baby |)bottle nipple*",
    "nude (lipstick*|lip*|nail*|polish|eyeshadow*|makeup|make up|heel*|pump*|shade*|tone*|color*|colour*|palette*)",
    "corpse (flower*|lil(y|ies)|reviver*)", "torture test*", "bod(y|ies) of water",
    "chink* (of|in)", "spic and span", "fag end*",
    "(suicide|overdose|anorexia|self harm) (prevention|awareness|hotline*|helpline*|lifeline*|recovery|support)",
    "suicide (squad|door*)",
    "(photographer*|cameraman|cameramen|camera crew*|filmmaker*|film crew*) (shoot*|shot|shooting)",
    "(shoot*|shot) " + _PEOPLE + " (s |)(portrait*|photo*|picture*|headshot*)",
]
# Sexual content together with any of these anywhere in the prompt counts as involving minors.
MINORS = [
    "child", "children", "kid", "kids", "minor", "minors", "underage", "teen*", "preteen*", "boy", "boys",
    "girl", "girls", "baby", "babies", "toddler*", "schoolgirl*", "schoolboy*", "little (girl|boy)*",
    "young (girl|boy)*", "([1-9]|1[0-7]) (year|years|yr|yrs) old",
]

# Cyrillic and Latin look-alikes, and small capitals
_LOOKALIKES = str.maketrans("аеорсхуіјѕԁɡᴀʙᴄᴅᴇꜰɢʜɪᴊᴋʟᴍɴᴏᴘʀꜱᴛᴜᴠᴡʏᴢ", "aeopcxyijsdgabcdefghijklmnoprstuvwyz")
_LEET = {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "@": "a", "$": "s", "!": "i"}


def _variants(prompt: str) -> set[str]:
    """Normalised forms of a prompt: words of [a-z0-9] separated by single spaces.

    Two ways of reading separators ("nu-de" as "nu de" and as "nude") times two readings of "1"
    ("k1ll", "b1ood") are all checked.
    """
    text = unicodedata.normalize("NFKD", prompt).lower().translate(_LOOKALIKES)
    text = "".join(_plain(ch) for ch in text)
    forms = set()
    for one in ("i", "l"):
        words = " ".join(_deleet(word, one) for word in text.split())
        for joined in (words, re.sub(r"(?<=[a-z0-9])[.\-_*'~^+|/\\]+(?=[a-z0-9])", "", words)):
            forms.add(" ".join(_join_spelled(re.sub(r"[^a-z0-9]+", " ", joined).split())))
    return forms


def _plain(ch: str) -> str:
    """A character as the filter reads it: marks (accents, variation selectors) and invisible format characters
    (zero-width spaces, direction marks) are dropped, and every kind of dash is a hyphen."""
    kind = unicodedata.category(ch)
    return "" if kind in ("Mn", "Me", "Cf") else "-" if kind == "Pd" else ch


def _deleet(word: str, one: str) -> str:
    """Leetspeak to letters, only in words that also have letters ("3 cats" and "100 m" stay numbers).

    A trailing "!" is punctuation, not an "i".
    """
    if not re.search("[a-z]", word):
        return word
    table = {**_LEET, "1": one}
    return re.sub(r"[013457@$]|!(?=.)", lambda match: table[match[0]], word)


def _join_spelled(tokens: list[str]) -> list[str]:
    """Join runs of three or more one-letter words: "n u d e" -> "nude"."""
    out: list[str] = []
    run: list[str] = []
    for token in [*tokens, ""]:
        if len(token) == 1 and token.isalpha():
            run.append(token)
            continue
        if len(run) >= 4 and run[0] in ("a", "i"):  # "a n u d e" is "a nude"
            out.append(run.pop(0))
        out.extend(["".join(run)] if len(run) >= 3 else run)
        run = []
        if token:
            out.append(token)
    return out


def _compile(patterns: Iterable[str]) -> re.Pattern[str]:
    """One whole-word regex for a list of patterns; each letter also matches a run of itself."""
    alternatives = []
    for pattern in patterns:
        body = "".join(f"{ch}+" if ch.isalpha() else "[a-z]*" if ch == "*" else " +" if ch == " " else ch
                       for ch in pattern)
        alternatives.append(body)
    return re.compile(r"(?<![a-z0-9])(?:" + "|".join(alternatives) + r")(?![a-z0-9])")


def _literal(term: str) -> str:
    """A user-supplied term as a pattern: normalised like prompts, no pattern syntax."""
    return min(_variants(term), key=len)


class SafetyFilter:
    """A compiled blocklist. `enabled=None` follows KINEMA_SAFETY (off/0/false/no disables it).

    `extra_terms` adds plain words or phrases (no pattern syntax), either as a list (reported as
    "blocked terms") or as a dict of category -> terms.
    """

    def __init__(self, enabled: bool | None = None, extra_terms: Iterable[str] | dict[str, list[str]] | None = None):
        self.enabled = enabled
        extra = extra_terms if isinstance(extra_terms, dict) else {"blocked terms": list(extra_terms or [])}
        categories = dict(BLOCKLIST)
        for category, terms in extra.items():
            literals = [literal for literal in map(_literal, terms) if literal]
            if literals:
                categories[category] = [*categories.get(category, []), *literals]
        self._rules = {category: _compile(patterns) for category, patterns in categories.items()}
        self._minors = _compile(MINORS)
        self._harmless = _compile(HARMLESS)
        self._sexual = self._rules["sexual content"]

    @property
    def active(self) -> bool:
        if self.enabled is not None:
            return self.enabled
        value = os.environ.get("KINEMA_SAFETY", "").strip().lower() or "on"
        if value not in ("on", "1", "true", "yes", "off", "0", "false", "no"):  # a typo must not pass unnoticed
            raise KinemaError(f"KINEMA_SAFETY must be on or off, got {value!r}")
        return value in ("on", "1", "true", "yes")

    def category(self, prompt: str) -> str | None:
        """The first blocked category the prompt falls in, or None if it is allowed."""
        forms = {self._harmless.sub(" ", form) for form in _variants(prompt)}
        for category, rule in self._rules.items():
            if any(rule.search(form) for form in forms):
                if rule is self._sexual and any(self._minors.search(form) for form in forms):
                    return "sexual content involving minors"
                return category
        return None

    def check(self, prompt: str) -> None:
        """Raise a content-policy KinemaError if the prompt is blocked (and the filter is active)."""
        if not self.active:
            return
        category = self.category(prompt)
        if category is not None:
            raise KinemaError(f"the prompt was refused by the content policy ({category}); "
                              "describe a different scene", code="content_policy_violation", param="prompt")


@functools.cache
def _default() -> SafetyFilter:
    return SafetyFilter()


def check_prompt(prompt: str) -> None:
    """Raise KinemaError(code="content_policy_violation", param="prompt") for a blocked prompt."""
    _default().check(prompt)


def check_setting() -> None:
    """A KINEMA_SAFETY that is neither on nor off fails when a pipeline is made (a server's start), not at every
    request, where it would read as the client's fault."""
    _default().active  # noqa: B018  (the property checks the variable)
