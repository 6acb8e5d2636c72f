"""The peers' protocols, each checked against the peer's own program or code on fixed fixtures.

ishiwatari: Ishiwatari et al. (2019)'s norbleu.py runs the Moses `sentence-bleu` program on each prediction
against the word's first 10 definitions at once, averages a word's predictions, then the words.
giulianelli: Giulianelli et al. (2023)'s evaluate_simple.py strips periods (regex \\.(?!\\d)) and averages, over
the target's gold definitions, NLTK sentence BLEU with smoothing method 2 and auto_reweigh on whitespace tokens.
"""

from __future__ import annotations

import json
import re

import pytest
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

from dataset.records import Record
from evaluation.api import score, score_records
from evaluation.bleu import moses_sentence_bleu
from evaluation.evaluate import main as evaluate_main
from evaluation.protocols import PROTOCOLS, reference_lists


def records_of(term: str, definitions: list[str]) -> list[Record]:
    return [Record(f"{term}:{i}", term, f"a use of {term}", d, "Fixture", "test") for i, d in enumerate(definitions)]


def test_ishiwatari_scores_are_the_moses_program_on_the_words_references(data_3dex):
    """1,000 Urban hypotheses with the real Moses `sentence-bleu` output recorded: under `ishiwatari` each
    prediction scores what the program printed for it against all its word's references."""
    rows = [json.loads(line) for line in (data_3dex / "moses_sentence_bleu_urban_test.jsonl").open()]
    rows = [r for r in rows if len(r["references"]) <= 10]
    pool, targets, hyps = [], [], []
    for k, r in enumerate(rows):
        records = records_of(f"w{k}", r["references"])
        pool += records
        targets.append(records[0])
        hyps.append(r["hypothesis"])
    scores = score_records(hyps, targets, ("bleu",), "ishiwatari", pool=pool).per_example("mean")["bleu"]
    assert len(rows) > 900
    assert scores.tolist() == pytest.approx([100 * r["moses_multi"] for r in rows], abs=2e-4)


def norbleu(hyps_by_word: dict[str, list[str]], refs_by_word: dict[str, list[str]]) -> float:
    """norbleu.py's average (mode average), the Moses program standing in as our verified reproduction."""
    per_word = []
    for word, hyps in hyps_by_word.items():
        refs = refs_by_word[word][:10]
        per_word.append(sum(moses_sentence_bleu(h, refs) for h in hyps) / len(hyps))
    return 100 * sum(per_word) / len(per_word)


def test_ishiwatari_keeps_ten_references_and_averages_by_word():
    bank = records_of("bank", [f"definition number {i} of a bank" for i in range(12)])
    lark = records_of("lark", ["a songbird", "a bit of fun"])
    pool = bank + lark
    preds = {r.id: r.definition for r in bank}  # every bank context answered with its own gold definition
    preds[bank[11].id] = bank[11].definition  # the 12th definition is no reference under ishiwatari
    preds[lark[0].id] = "a small brown bird"
    preds[lark[1].id] = "a prank"
    targets = bank + lark
    hyps = [preds[r.id] for r in targets]
    got = score(hyps, targets, ("bleu",), "ishiwatari", pool=pool)["bleu"]
    want = norbleu(
        {"bank": hyps[:12], "lark": hyps[12:]},
        {"bank": [r.definition for r in bank], "lark": [r.definition for r in lark]},
    )
    assert got == pytest.approx(want, abs=1e-9)
    lists = reference_lists(targets, pool, PROTOCOLS["ishiwatari"])
    assert lists[11] == [r.definition for r in bank[:10]]  # the first 10 in file order, own gold not forced in
    per_example = score_records(hyps, targets, ("bleu",), "ishiwatari", pool=pool).per_example("mean")["bleu"]
    assert per_example[11] < 100 and score([hyps[11]], [bank[11]], ("bleu",), "max", pool=pool)["bleu"] == 100
    example_mean = float(per_example.mean())
    assert got != pytest.approx(example_mean)  # 12 bank rows weigh as much as 2 lark rows


def giulianelli_bleu(pred: str, golds: list[str]) -> float:
    """evaluate_simple.py's nltk_bleu for one prediction (mean over golds), with the reference list fixed."""
    period = re.compile(r"\.(?!\d)")
    pred = period.sub("", pred)
    values = [
        sentence_bleu(
            [period.sub("", g).split()],
            pred.split(),
            smoothing_function=SmoothingFunction().method2,
            auto_reweigh=bool(pred.split()),
        )
        for g in golds
    ]
    return 100 * sum(values) / len(values)


FIXTURE = [
    ("bank", ["A financial institution.", "The side of a river.", "A place that stores 3.5 tonnes of gold."]),
    ("lark", ["A songbird.", "Something done for fun."]),
    ("ennui", ["Boredom."]),
]
PREDICTIONS = [
    "a financial institution.",
    "the side of the river",
    "a bank that stores 3.5 tonnes.",
    "a bird.",
    "",
    "boredom",
]


def test_giulianelli_matches_their_scorer_with_the_reference_list_fixed():
    pool = [r for term, defs in FIXTURE for r in records_of(term, defs)]
    got = score_records(PREDICTIONS, pool, ("bleu",), "giulianelli").per_example("mean")["bleu"]
    golds = {term: defs for term, defs in FIXTURE}
    want = [giulianelli_bleu(p, golds[r.term]) for p, r in zip(PREDICTIONS, pool)]
    assert got.tolist() == pytest.approx(want, abs=1e-9)
    assert got[4] == 0.0  # an empty prediction scores 0 (and is counted)
    # Their released call passes gold.split() as the *list of references*: NLTK then reads every gold word as
    # a reference made of characters, so even the gold definition itself scores far below 100. Not reproduced.
    gold = "the side of a river bank in spring"
    method2 = SmoothingFunction().method2
    released = 100 * sentence_bleu(gold.split(), gold.split(), smoothing_function=method2, auto_reweigh=True)
    assert released == pytest.approx(13.888, abs=1e-3)
    river = Record("r:0", "riverbank", "by the river", gold, "Fixture", "test")
    assert score([gold], [river], ("bleu",), "giulianelli")["bleu"] == pytest.approx(100.0)


def test_any_predictions_file_rescored_under_each_protocol(urban, tmp_path):
    """One file of real Urban predictions, scored under every protocol; the signature names each."""
    records = urban[:80]
    refs = tmp_path / "test.jsonl"
    refs.write_text("".join(r.to_json() + "\n" for r in records))
    preds = tmp_path / "p.jsonl"
    preds.write_text("".join(json.dumps({"id": r.id, "prediction": r.definition + "."}) + "\n" for r in records))
    bleu = {}
    for protocol in ("max", "orig-compat", "ishiwatari", "giulianelli"):
        out = tmp_path / protocol
        args = ["--predictions", preds, "--references", refs, "--protocol", protocol, "--output-dir", out]
        assert evaluate_main([str(a) for a in args]) == 0
        scores = json.loads((out / "scores.json").read_text())
        assert f"|protocol:{protocol}|" in scores["signatures"]["bleu"]
        bleu[protocol] = scores["bleu"]
    sig = json.loads((tmp_path / "ishiwatari" / "scores.json").read_text())["signatures"]["bleu"]
    assert "|refs:term|combine:multi|max_refs:10|average:term|" in sig
    sig = json.loads((tmp_path / "giulianelli" / "scores.json").read_text())["signatures"]["bleu"]
    assert "|combine:mean|periods:stripped|" in sig and "|smooth:nltk-method2|" in sig
    assert bleu["orig-compat"] == 100.0  # periods stripped: the gold again
    assert bleu["giulianelli"] < 100.0  # the mean over a term's definitions, the wrong senses included
    assert bleu["max"] < 100.0 and bleu["ishiwatari"] < 100.0  # the added period costs Moses BLEU
