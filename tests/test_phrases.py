"""Caption -> region phrases (training/phrases.py): a table of captions and the phrases a reader
finds in them, the vocabulary's consistency with the region names and with its documentation."""

from __future__ import annotations

from pathlib import Path

import pytest

from fmu.training.phrases import (
    EXPRESSIONS,
    VOCABULARY,
    extract_phrases,
    regions_of,
    vocabulary_markdown,
)

# caption -> [(phrase text, regions)], in caption order
CASES = [
    ("a woman with short wavy brown hair", [("short wavy brown hair", ("hair",))]),
    ("a woman with full red lips", [("full red lips", ("lips",))]),
    ("a man with a thin moustache", [("thin moustache", ("moustache",))]),
    ("a man with a thin mustache", [("thin mustache", ("moustache",))]),
    ("a photo of a person", []),
    ("", []),
    ("a landscape at sunset, mountains in the background", []),
    ("A Man With Blue Eyes and RED LIPS.", [("Blue Eyes", ("eyes",)), ("RED LIPS", ("lips",))]),
    ("red lips, red lips", [("red lips", ("lips",)), ("red lips", ("lips",))]),
    ("blue eyes; blue eyes!", [("blue eyes", ("eyes",)), ("blue eyes", ("eyes",))]),
    ("an eye", [("eye", ("eyes",))]),
    ("long and wavy hair", [("long and wavy hair", ("hair",))]),
    ("a tall man and wavy hair", [("wavy hair", ("hair",))]),
    ("brown hair blue eyes", [("brown hair", ("hair",)), ("blue eyes", ("eyes",))]),
    ("blue eyes and red lips", [("blue eyes", ("eyes",)), ("red lips", ("lips",))]),
    ("a smiling woman", [("smiling", ("mouth",))]),
    ("smiling eyes", [("smiling eyes", ("eyes",))]),
    ("a frowning man", [("frowning", ("eyebrows", "forehead"))]),
    ("she is squinting in the sun", [("squinting", ("eyes",))]),
    ("frowning, closed eyes", [("frowning", ("eyebrows", "forehead")), ("closed eyes", ("eyes",))]),
    ("a broad smile with white teeth", [("broad smile", ("mouth",)), ("white teeth", ("mouth",))]),
    ("a man without glasses", []),
    ("a man with a beard but no moustache", [("beard", ("lower_face",))]),
    ("not smiling", []),
    ("a woman without any makeup, smiling", [("smiling", ("mouth",))]),
    ("her upper lip", [("upper lip", ("upper_lip",))]),
    ("a red lower lip and a thin upper lip", [("red lower lip", ("lower_lip",)), ("thin upper lip", ("upper_lip",))]),
    ("blue eye shadow", [("blue eye shadow", ("eyes",))]),
    ("a woman's red lips", [("red lips", ("lips",))]),
    ("shoulder-length hair and a white t-shirt",
     [("shoulder-length hair", ("hair",)), ("white t-shirt", ("clothes",))]),
    ("a woman wearing sunglasses and a hat", [("sunglasses", ("eyeglasses",)), ("hat", ("hat",))]),
    ("thick eyebrows, thin brows", [("thick eyebrows", ("eyebrows",)), ("thin brows", ("eyebrows",))]),
    ("freckles on her cheeks", [("freckles", ("skin",)), ("cheeks", ("cheeks",))]),
    ("a man with stubble and big ears", [("stubble", ("lower_face",)), ("big ears", ("ears",))]),
    ("gold earrings and a pearl necklace", [("gold earrings", ("earrings",)), ("pearl necklace", ("necklace",))]),
    ("a goatee", [("goatee", ("chin",))]),
    ("(long eyelashes)", [("long eyelashes", ("eyes",))]),
    ("eyes eyes eyes", [("eyes", ("eyes",))] * 3),
    ("a very very very long and thin straight black nose", [("very long and thin straight black nose", ("nose",))]),
    ("Pale skin, rosy cheeks and a small nose", [("Pale skin", ("skin",)), ("rosy cheeks", ("cheeks",)),
                                                 ("small nose", ("nose",))]),
    ("a man with a long grey beard in a suit", [("long grey beard", ("lower_face",)), ("suit", ("clothes",))]),
    ("a woman’s long hair", [("long hair", ("hair",))]),
]


@pytest.mark.parametrize("caption,expected", CASES, ids=[c or "<empty>" for c, _ in CASES])
def test_caption_phrases(caption, expected):
    phrases = extract_phrases(caption)
    assert [(p.text, p.regions) for p in phrases] == expected
    for p in phrases:  # the phrase is the caption's own text at its span, the head word at its end
        assert caption[p.start:p.end] == p.text
        assert p.text.lower().replace("’", "'").endswith(p.head)


def test_table_is_big_enough_and_deterministic():
    assert len(CASES) >= 30
    assert all(extract_phrases(c) == extract_phrases(c) for c, _ in CASES)


def test_every_vocabulary_entry_alone_is_a_phrase_of_its_region():
    from fmu.core.regions import check_regions

    check_regions(VOCABULARY)
    check_regions({r for regions in EXPRESSIONS.values() for r in regions})
    seen = set()
    for region, words in VOCABULARY.items():
        for word in words:
            assert word not in seen, f"{word!r} is listed twice"
            seen.add(word)
            for caption in (word, f"a {word}.", word.upper()):
                (phrase,) = extract_phrases(caption)
                assert phrase.regions == (region,) and phrase.text.lower() == word
    for word, regions in EXPRESSIONS.items():
        assert word not in seen
        assert [p.regions for p in extract_phrases(f"she is {word}")] == [regions]


def test_singular_and_plural_forms():
    plurals = {"eye": "eyes", "lip": "lips", "eyebrow": "eyebrows", "brow": "brows", "ear": "ears",
               "earring": "earrings", "cheek": "cheeks", "tooth": "teeth", "freckle": "freckles",
               "moustache": "moustaches", "mustache": "mustaches", "beard": "beards", "eyelash": "eyelashes",
               "nostril": "nostrils", "hat": "hats", "necklace": "necklaces", "braid": "braids"}
    for one, many in plurals.items():
        assert extract_phrases(one)[0].regions == extract_phrases(many)[0].regions


def test_regions_of_lists_each_region_once():
    phrases = extract_phrases("red lips, blue eyes, full lips, frowning")
    assert regions_of(phrases) == ["lips", "eyes", "eyebrows", "forehead"]


def test_training_md_shows_the_vocabulary_table():
    doc = (Path(__file__).resolve().parents[1] / "manifests" / "training.md").read_text()
    assert vocabulary_markdown() in doc
