"""The answer parser: chatty API answers -> one definition; lists; WSD letters."""
from __future__ import annotations

import pytest

from prompts.parse import parse_choice, parse_definition, parse_list

CHATTY = [
    ("a financial institution", "a financial institution"),
    ('Sure! Here is the definition:\n\n**Definition:** "sloping land beside a river"', "sloping land beside a river"),
    ('In this context, "bank" refers to the sloping land beside a body of water.',
     "the sloping land beside a body of water."),
    ('The definition of "bank" is: a place where money is kept', "a place where money is kept"),
    ('"Bank" means a financial institution.\n\nLet me know if you need more examples!', "a financial institution."),
    ("Definition:\nto tilt an aircraft while turning", "to tilt an aircraft while turning"),
    ("**to rely on something** (short and concise)", "to rely on something"),
    ("```\na dose of 3.5 ml: taken twice daily\n```", "a dose of 3.5 ml: taken twice daily"),
    ("1. a measure of 10.5 litres", "a measure of 10.5 litres"),
    ("Meaning of \"bank\": an arrangement of similar objects in a row", "an arrangement of similar objects in a row"),
    ("Okay. The word \"bank\" here means a long ridge of earth. I hope this helps.", "a long ridge of earth."),
    ("", ""),
    ("\nA: The original sentence is:", "The original sentence is"),
    ("Here is the definition:", ""),
    ('The term "banks" refers to a lack of self-control, often characterized', "a lack of self-control, often characterized"),
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


@pytest.mark.parametrize("raw,index", [("B", 1), ("The answer is C.", 2), ("(D) a river bank", 3),
                                       ("A. a financial institution", 0), ("**Answer: b**", 1),
                                       ("I am not sure", None)])
def test_parse_choice(raw, index):
    assert parse_choice(raw) == index
