"""Stage 2 of the data (semantic extraction): a caption -> the phrases that name face regions.

A phrase is a region word (`VOCABULARY`) with the modifiers in front of it in the same clause:
"a woman with short wavy brown hair, full red lips" -> `short wavy brown hair` (hair), `full red
lips` (lips). An expression word (`EXPRESSIONS`) names the regions that show it ("smiling" ->
mouth); one that modifies a region word is part of that phrase ("smiling eyes" -> eyes).

Rules, in order (pure and deterministic; no tagger, no network):
- words are letters/digits with inner hyphens or apostrophes ("shoulder-length", "t-shirt");
  anything but spaces between two words (a comma, a full stop, a bracket...) ends a clause;
- the vocabulary is matched case-insensitively, longest entry first ("upper lip" before "lip");
- modifiers are collected leftwards from the region word, at most `MAX_MODIFIERS`, stopping at a
  clause end, a `STOP_WORDS` word (articles, pronouns, prepositions, verbs, people), a possessive
  ("woman's") or another region word; "and"/"or" joins two modifiers ("long and wavy hair") but
  never a modifier to a region or stop word ("blue eyes and red lips" gives two phrases);
- a mention negated just before it ("no beard", "without any glasses") is no phrase;
- every occurrence is its own phrase, in caption order.

To add a region word: add it (singular and plural, each spelling) to the region's entry in
`VOCABULARY` (a new region also needs a name in `core.regions.names.REGIONS` and a way for the
parsers to mask it), then add a case to tests/test_phrases.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# region -> the words (and word pairs) that name it
VOCABULARY: dict[str, tuple[str, ...]] = {
    "hair": ("hair", "hairs", "hairstyle", "hairstyles", "haircut", "haircuts", "hairdo", "bangs", "fringe",
             "ponytail", "ponytails", "pigtails", "braid", "braids", "bun", "buns", "curls", "ringlets",
             "locks", "dreadlocks", "afro", "mohawk", "updo"),
    "eyebrows": ("eyebrow", "eyebrows", "brow", "brows"),
    "eyes": ("eye", "eyes", "eyelash", "eyelashes", "lash", "lashes", "eyelid", "eyelids", "eyeliner",
             "mascara", "eyeshadow", "eye shadow", "eye makeup"),
    "irises": ("iris", "irises", "pupil", "pupils"),
    "nose": ("nose", "noses", "nostril", "nostrils"),
    "lips": ("lip", "lips", "lipstick", "lipsticks", "lip gloss"),
    "upper_lip": ("upper lip", "top lip"),
    "lower_lip": ("lower lip", "bottom lip"),
    "mouth": ("mouth", "mouths", "teeth", "tooth", "smile", "smiles", "grin", "grins"),
    "skin": ("skin", "complexion", "freckle", "freckles", "wrinkle", "wrinkles", "mole", "moles"),
    "face": ("face", "faces", "makeup", "make-up"),
    "forehead": ("forehead", "foreheads"),
    "cheeks": ("cheek", "cheeks", "cheekbone", "cheekbones", "dimple", "dimples", "blush"),
    "chin": ("chin", "chins", "goatee", "goatees"),
    "moustache": ("moustache", "moustaches", "mustache", "mustaches"),
    "lower_face": ("beard", "beards", "stubble", "jaw", "jaws", "jawline", "jawlines"),
    "ears": ("ear", "ears"),
    "earrings": ("earring", "earrings"),
    "eyeglasses": ("glasses", "eyeglasses", "spectacles", "sunglasses", "goggles"),
    "hat": ("hat", "hats", "cap", "caps", "beanie", "beanies", "helmet", "helmets", "headband", "headbands",
            "headscarf", "turban", "turbans"),
    "neck": ("neck", "necks"),
    "necklace": ("necklace", "necklaces", "choker", "chokers", "pendant", "pendants"),
    "clothes": ("shirt", "shirts", "t-shirt", "t-shirts", "jacket", "jackets", "suit", "suits", "dress",
                "dresses", "sweater", "sweaters", "hoodie", "hoodies", "coat", "coats", "blouse", "blouses",
                "uniform", "uniforms", "clothes", "clothing", "outfit", "outfits", "collar", "scarf", "scarves",
                "necktie", "vest"),
}

# expression word -> the regions that show it
EXPRESSIONS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("smiling", "grinning", "laughing", "smirking", "yawning"), ("mouth",)),
    **dict.fromkeys(("pouting", "pouty"), ("lips",)),
    **dict.fromkeys(("frowning", "frown", "frowns", "scowling", "scowl"), ("eyebrows", "forehead")),
    **dict.fromkeys(("squinting", "squint", "winking", "wink", "blinking"), ("eyes",)),
    **dict.fromkeys(("blushing", "flushed"), ("cheeks",)),
}

def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


NEGATIONS = _words("no not without never none non")
STOP_WORDS = _words("""
a an the this that these those his her hers their its my your our one some any every each all both
and or but nor with of in on at by for from to into onto over under above below behind near beside
between through across against around while as than like who whom which whose where when is are was
were be been being am has have had having do does did wears wearing wore worn wear shows showing show
sporting sports featuring features featured holding holds looking looks look stands standing sitting
sits posing poses appears appearing seems seen he she they it him them we i you me us person persons
man woman men women boy girl boys girls child children kid kids baby lady ladies gentleman guy guys
people adult teen teenager model actor actress portrait photo photograph picture image selfie headshot
close-up closeup shot view""") | NEGATIONS
MAX_MODIFIERS = 6
NEGATION_REACH = 2  # a negation this many words before the phrase (within the clause) cancels it

_WORD = re.compile(r"[0-9A-Za-z]+(?:['’\-][0-9A-Za-z]+)*")


@dataclass(frozen=True)
class Phrase:
    text: str                   # exactly as in the caption (training maps it to tokens by text)
    start: int                  # character span in the caption
    end: int
    regions: tuple[str, ...]    # core.regions names
    head: str                   # the vocabulary entry or expression word that made it a phrase


def _terms() -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """(words of the entry, regions), longest entries first."""
    terms = [(tuple(entry.split()), (region,)) for region, entries in VOCABULARY.items() for entry in entries]
    terms += [((word,), regions) for word, regions in EXPRESSIONS.items()]
    return sorted(terms, key=lambda t: -len(t[0]))


_TERMS = _terms()


def _tokens(caption: str) -> list[tuple[str, int, int]]:
    return [(m.group(0).lower().replace("’", "'"), m.start(), m.end()) for m in _WORD.finditer(caption)]


def _joined(caption: str, left: tuple, right: tuple) -> bool:
    """Two neighbouring words in one clause: only spaces between them."""
    return caption[left[2]:right[1]].strip() == ""


def _match(words: list[str], i: int):
    for entry, regions in _TERMS:
        if tuple(words[i:i + len(entry)]) == entry:
            return entry, regions
    return None


def _is_stop(word: str) -> bool:
    return word in STOP_WORDS or word.endswith(("'s", "s'"))


def extract_phrases(caption: str) -> list[Phrase]:
    """The region phrases of a caption, in caption order (see the module doc for the rules)."""
    caption = caption or ""
    tokens = _tokens(caption)
    words = [t[0] for t in tokens]
    # 1. where the vocabulary and the expression words are (longest entry first, no overlaps)
    heads, i = [], 0
    while i < len(words):
        found = _match(words, i)
        if found:
            heads.append((i, i + len(found[0]), found))
            i += len(found[0])
        else:
            i += 1
    is_head = {k for first, last, _ in heads for k in range(first, last)}
    expression_only = {first for first, last, (entry, _) in heads if " ".join(entry) in EXPRESSIONS}
    consumed: set[int] = set()
    phrases = []
    # 2. each head takes the modifiers in front of it (region words first, so that "smiling
    #    eyes" is one phrase of the eyes rather than a smile)
    for first, last, (entry, regions) in sorted(heads, key=lambda h: h[0] in expression_only):
        if first in consumed:
            continue
        start = first
        while start > 0 and first - start < MAX_MODIFIERS and _joined(caption, tokens[start - 1], tokens[start]):
            word = words[start - 1]
            if word in ("and", "or"):
                # joins two modifiers only: the word before it must be one, and so must the word after
                if start - 2 < 0 or start == first or not _joined(caption, tokens[start - 2], tokens[start - 1]):
                    break
                before = words[start - 2]
                if _is_stop(before) or ((start - 2) in is_head and (start - 2) not in expression_only):
                    break
                start -= 1
                continue
            if _is_stop(word) or ((start - 1) in is_head and (start - 1) not in expression_only):
                break
            start -= 1
        if _negated(caption, tokens, words, start):
            continue
        consumed.update(range(start, last))
        phrases.append(Phrase(text=caption[tokens[start][1]:tokens[last - 1][2]], start=tokens[start][1],
                              end=tokens[last - 1][2], regions=regions, head=" ".join(entry)))
    return sorted(phrases, key=lambda p: p.start)


def _negated(caption: str, tokens, words, start: int) -> bool:
    k = start
    for _ in range(NEGATION_REACH):
        if k == 0 or not _joined(caption, tokens[k - 1], tokens[k]):
            return False
        k -= 1
        if words[k] in NEGATIONS:
            return True
        if words[k] not in STOP_WORDS:
            return False
    return False


def regions_of(phrases: list[Phrase]) -> list[str]:
    """Every region the phrases name, once each, in order."""
    return list(dict.fromkeys(r for p in phrases for r in p.regions))


def vocabulary_markdown() -> str:
    """The vocabulary as the markdown table manifests/training.md shows (a test keeps them equal)."""
    lines = ["| region | words |", "|--------|-------|"]
    lines += [f"| `{region}` | {', '.join(words)} |" for region, words in VOCABULARY.items()]
    lines += ["", "| expression | regions |", "|------------|---------|"]
    by_regions: dict[tuple, list[str]] = {}
    for word, regions in EXPRESSIONS.items():
        by_regions.setdefault(regions, []).append(word)
    lines += [f"| {', '.join(words)} | {', '.join(f'`{r}`' for r in regions)} |"
              for regions, words in by_regions.items()]
    return "\n".join(lines)
