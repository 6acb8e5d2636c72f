"""The answer parser: chatty API answers -> the bare definition (a fixture corpus of 254 answers in the
vendors' styles), never a change to a real 3D-EX or WordNet definition; lists; WSD letters."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from dataset.readers import iter_3dex_csv
from dataset.records import Record, load_records
from prompts.parse import parse_choice, parse_definition, parse_list, split_list

CHATTY = [
    ("a financial institution", "a financial institution"),
    ('Sure! Here is the definition:\n\n**Definition:** "sloping land beside a river"', "sloping land beside a river"),
    (
        'In this context, "bank" refers to the sloping land beside a body of water.',
        "the sloping land beside a body of water.",
    ),
    ('The definition of "bank" is: a place where money is kept', "a place where money is kept"),
    ('"Bank" means a financial institution.\n\nLet me know if you need more examples!', "a financial institution."),
    ("Definition:\nto tilt an aircraft while turning", "to tilt an aircraft while turning"),
    ("```\na dose of 3.5 ml: taken twice daily\n```", "a dose of 3.5 ml: taken twice daily"),
    ("1. a measure of 10.5 litres", "a measure of 10.5 litres"),
    ('Meaning of "bank": an arrangement of similar objects in a row', "an arrangement of similar objects in a row"),
    ('Okay. The word "bank" here means a long ridge of earth. I hope this helps.', "a long ridge of earth."),
    ("", ""),
    ("\nA: The original sentence is:", "The original sentence is:"),  # a cut-off answer keeps its colon
    ("Here is the definition:", "Here is the definition:"),  # nothing else: scored as written
    (
        'The term "banks" refers to a lack of self-control, often characterized',
        "a lack of self-control, often characterized",
    ),
]


@pytest.mark.parametrize("raw,expected", CHATTY)
def test_parse_definition(raw, expected):
    assert parse_definition(raw, "bank") == expected


def test_decimals_and_numbers_survive():
    # The original deleted "1."..."10." anywhere: "version 2.1. of 10.5" lost its numbers.
    text = "a tax of 1.5 percent paid in 10. installments"
    assert parse_definition(text, "levy") == text
    assert parse_list("It cost 3.5 dollars. ### 2. A 10.5 km walk.") == ["It cost 3.5 dollars.", "A 10.5 km walk."]


def test_parse_list_drops_preambles():
    raw = "Here are ten sentences:\n### 1. The bank was steep.### 2) She sat on the bank.###"
    assert parse_list(raw) == ["The bank was steep.", "She sat on the bank."]


@pytest.mark.parametrize(
    "raw,index",
    [
        ("B", 1),
        ("The answer is C.", 2),
        ("(D) a river bank", 3),
        ("A. a financial institution", 0),
        ("**Answer: b**", 1),
        ("I am not sure", None),
    ],
)
def test_parse_choice(raw, index):
    assert parse_choice(raw) == index


FIXTURE = Path(__file__).with_name("chatty_answers.jsonl")
ANSWERS = [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines()]


def test_the_chatty_corpus_covers_every_vendor():
    assert len(ANSWERS) >= 200
    assert Counter(a["vendor"] for a in ANSWERS).keys() == {"openai", "anthropic", "gemini"}
    assert min(Counter(a["vendor"] for a in ANSWERS).values()) >= 60
    assert sum(a["answer"] != a["expected"] for a in ANSWERS) >= 230  # nearly all carry a wrapper


@pytest.mark.parametrize("answer", ANSWERS, ids=lambda a: f"{a['vendor']}-{a['term']}")
def test_chatty_answers_give_the_bare_definition(answer):
    got = parse_definition(answer["answer"], answer["term"])
    assert got == answer["expected"]
    # Only wrappers went: the definition is a run of whole words of the answer (markup and quotes aside).
    words, mine = _words(answer["answer"]), _words(got)
    assert any(words[i : i + len(mine)] == mine for i in range(len(words)))


def _words(text: str) -> list[str]:
    return [w for w in (w.strip("\"“”'‘’*_.,:;!?()") for w in re.sub(r"</?\w+>", " ", text).split()) if w]


@pytest.mark.parametrize(
    "text",
    [
        "Bank is a place where money is kept.",  # "X is ..." is content (3D-EX references read so)
        "bank means a place where money is kept",  # so is the bare term with "means"
        "The word bank means a place where money is kept",
        "Absolutely.",
        "Sure enough",
        "ok not great not bad",  # acknowledgements that are the answer
        "absolutely fantastically crappy",
        "someone who says let me know when you are free",  # a sign-off phrase inside a clause
        "a good excuse for everything if you have it",
        "meaning of bhapinder is king of kings",
        "having or being more than normal or necessary:",  # a final colon is content
        "the act of swimming; :",
        "*nsync fan",
        "f**k off",
        "*^* symbol",
        "snake_case names like my_var",  # asterisks that are not markdown
        '" metaphorical description of the side of the moon facing away from earth',
        "(usually followed by `to') having the necessary means",
        "2nd generation of part on a car",
        "16 ounces avoirdupois",
        "a friend. Let me know is what she says when she wants to hear from you",
    ],
)
def test_content_is_never_cut(text):
    assert parse_definition(text, "bank") == text


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("Sure! Here is the definition: a sloping bank. Let me know if you need more!", "a sloping bank."),
        ('In this context, "bank" means a ridge. I hope this helps!', "a ridge."),
        ("A ridge of earth.\n\nLet me know!", "A ridge of earth."),
        ("Absolutely!\n\nA ridge of earth.", "A ridge of earth."),  # an acknowledgement line before the answer
        ("**Bank**: a ridge", "a ridge"),
        ('"Bank" means a ridge', "a ridge"),
        ("Definition of bank: a ridge", "a ridge"),
    ],
)
def test_wrappers_go(raw, expected):
    assert parse_definition(raw, "bank") == expected


@pytest.fixture(scope="module")
def reference_definitions(data_3dex, wordnet_lexicon):
    """Every Urban test definition (3D-EX reader) and every distinct gloss of the embedded WordNet lexicon."""
    urban = [(r.term, r.definition) for _, r in iter_3dex_csv(data_3dex / "Urban_test.csv") if isinstance(r, Record)]
    glosses = {r.definition: r.term for r in load_records(wordnet_lexicon / "all.jsonl")}
    return urban, list(glosses.items())


def test_real_definitions_pass_unchanged(reference_definitions):
    urban, glosses = reference_definitions
    assert len(urban) == 15_375 and len(glosses) == 31_344
    for term, definition in [*urban, *((t, g) for g, t in glosses)]:
        assert parse_definition(definition, term) == definition, term


def test_real_definitions_in_a_chatty_wrapper(reference_definitions):
    """Real Urban definitions behind a label, a quoted-term lead and a sign-off come out exactly."""
    urban, _ = reference_definitions
    for term, definition in urban[::50]:
        assert parse_definition(f"**Definition:** {definition}\n\nLet me know!", term) == definition
        assert parse_definition(f'In this context, "{term}" refers to {definition}', term) == definition


def test_lists_as_written_or_parsed():
    raw = "Here are two:\n### 1. **The bank** was steep. ### 2) f*ck, a 3.5 m bank.###"
    assert parse_list(raw) == ["The bank was steep.", "f*ck, a 3.5 m bank."]
    assert split_list(raw) == ["Here are two:", "1. **The bank** was steep.", "2) f*ck, a 3.5 m bank."]
