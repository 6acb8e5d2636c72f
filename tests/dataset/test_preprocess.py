"""Preprocess stage on the real 3D-EX files and on malformed fixtures."""

from __future__ import annotations

import itertools
import json

import pytest

from dataset.preprocess import main
from dataset.readers import iter_3dex_csv
from dataset.records import load_records
from dataset.stats import compute_stats

HEADER = "WORD,DEFINITION,EXAMPLE,DATASET_NAME,SPLIT_TYPE\n"


def run(*argv) -> int:
    return main([str(a) for a in argv])


def test_urban_test_counts(data_3dex, tmp_path):
    assert run("--input", data_3dex / "Urban_test.csv", "--output-dir", tmp_path) == 0
    records = load_records(tmp_path / "all.jsonl")
    assert len(records) == 15375
    assert len({r.term for r in records}) == 13016
    stats = compute_stats(records)
    assert stats["divergent_groups"] == 13
    assert {r.split for r in records} == {"test"} and {r.source for r in records} == {"Urban"}
    assert len(load_records(tmp_path / "urban" / "test.jsonl")) == 15375
    assert len({r.id for r in records}) == 15375
    # Stray leading quote and doubled quotes survive as text (row 3 of the file).
    assert records[2].context.startswith('"scott says ""mess with me')


@pytest.mark.parametrize("name,source", [("Hei++.csv", "Hei++"), ("MultiRD_test.csv", "MultiRD")])
def test_sources_without_contexts_are_dropped_with_reason(data_3dex, tmp_path, capsys, name, source):
    assert run("--input", data_3dex / name, "--output-dir", tmp_path) == 0
    assert (tmp_path / "all.jsonl").read_text() == ""
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["records"] == 0
    rows = {"Hei++": 713, "MultiRD": 1000}[source]
    assert summary["files"][0]["dropped"] == {f"excluded source {source} (no usage contexts)": rows}
    assert f"{rows} rows dropped (" in capsys.readouterr().out


def test_stats_cli(data_3dex, capsys):
    assert run("--stats", data_3dex / "Urban_test.csv") == 0
    out = capsys.readouterr().out
    assert "records: 15375   unique terms: 13016" in out
    assert "divergent (term, context) groups with >1 definition: 13" in out


def test_csv_quirks(tmp_path):
    src = tmp_path / "quirks.csv"
    src.write_bytes(
        (
            "\ufeff"
            + HEADER
            + 'bank,"land beside a river, sloping","she sat on the ""bank""",WordNet,train\n'
            + 'run,"to move\nfast","""he ran",Oxford,dev\n'
            + 'x,def,"[[\'ctx one\', \'ctx two\'], [\'ctx three\']]","[""[\'WordNet\']"", ""[\'Oxford\']""]",test\n'
        ).encode()
    )
    out = tmp_path / "out"
    assert run("--input", src, "--output-dir", out) == 0
    recs = load_records(out / "all.jsonl")
    assert [(r.term, r.context, r.definition, r.source, r.split) for r in recs] == [
        ("bank", 'she sat on the "bank"', "land beside a river, sloping", "WordNet", "train"),
        ("run", '"he ran', "to move fast", "Oxford", "valid"),
        ("x", "ctx one", "def", "WordNet", "test"),
        ("x", "ctx two", "def", "WordNet", "test"),
        ("x", "ctx three", "def", "Oxford", "test"),
    ]
    assert len(load_records(out / "wordnet" / "test.jsonl")) == 2
    assert len(load_records(out / "valid.jsonl")) == 1


def test_filters_are_counted(tmp_path):
    src = tmp_path / "f.csv"
    src.write_text(
        HEADER + ",def,ctx,Urban,test\nw,,ctx,Urban,test\nw,d,,Urban,test\nw,d,c,,test\n"
        "w,d,c,Webster's Unabridged,test\nw,d,c,Urban,test\n"
    )
    out = tmp_path / "out"
    assert run("--input", src, "--output-dir", out) == 0
    s = json.loads((out / "summary.json").read_text())["files"][0]
    assert s["records"] == 1 and s["dropped_total"] == 5
    assert s["dropped"]["excluded source Webster's Unabridged (no usage contexts)"] == 1


@pytest.mark.parametrize(
    "body,where",
    [
        ("w,d,c,Urban\n", "bad.csv:3: SPLIT_TYPE: missing (row has 4 of 5 fields)"),
        ("w,d,c,Urban,test,extra\n", "bad.csv:3: row has 6 fields, header has 5"),
        ("w,d,c,Urban,holdout\n", "bad.csv:3: SPLIT_TYPE: unknown split 'holdout'"),
        (
            "w,d,\"[['a'], ['b']]\",\"['Urban', 'Oxford', 'WordNet']\",test\n",
            "bad.csv:3: EXAMPLE: 2 example groups but 3 dataset names",
        ),
        ('w,d,"unterminated,Urban,test\n', "bad.csv:3: malformed CSV"),
    ],
)
def test_malformed_csv_errors(tmp_path, capsys, body, where):
    src = tmp_path / "bad.csv"
    src.write_text(HEADER + "ok,fine,context,Urban,test\n" + body)
    out = tmp_path / "out"
    assert run("--input", src, "--output-dir", out) == 1
    err = capsys.readouterr().err
    assert where in err and len(err.strip().splitlines()) == 1
    assert not out.exists() or not any(p.suffix == ".jsonl" for p in out.rglob("*"))


def test_invalid_utf8_names_line_and_field(tmp_path, capsys):
    src = tmp_path / "bad.csv"
    src.write_bytes(HEADER.encode() + b"ok,fine,context,Urban,test\nw,d\xff\xfe,c,Urban,test\n")
    assert run("--input", src, "--output-dir", tmp_path / "out") == 1
    assert "bad.csv:3: DEFINITION: invalid UTF-8 bytes" in capsys.readouterr().err


def test_skip_bad_rows_counts_them(tmp_path):
    src = tmp_path / "bad.csv"
    src.write_text(HEADER + "a,d,c,Urban,test\nw,d,c,Urban\nb,d,c,Urban,test\n")
    out = tmp_path / "out"
    assert run("--input", src, "--output-dir", out, "--on-bad-row", "skip") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["records"] == 2 and summary["bad_rows_skipped"] == 1
    assert "bad.csv:3:" in summary["files"][0]["errors"][0]


def test_jsonl_inputs_original_format(tmp_path, capsys):
    src = tmp_path / "test.jsonl"
    src.write_text(
        json.dumps(
            {
                "term": "bank",
                "context": "the bank  of a river",
                "definition": "land",
                "source": "3D-EX",
                "instruction": "ignored",
            }
        )
        + "\n\n"
        + json.dumps({"term": "x", "context": "c", "definition": 3})
        + "\n"
    )
    out = tmp_path / "out"
    assert run("--input", src, "--output-dir", out) == 1
    assert "test.jsonl:3: definition: expected a string, got 3" in capsys.readouterr().err
    src.write_text(src.read_text().splitlines()[0] + "\n{not json\n")
    assert run("--input", src, "--output-dir", out) == 1
    assert "test.jsonl:2: invalid JSON" in capsys.readouterr().err
    src.write_text(src.read_text().splitlines()[0] + "\n")
    assert run("--input", src, "--output-dir", out) == 0
    (rec,) = load_records(out / "all.jsonl")
    assert (rec.term, rec.context, rec.source, rec.split) == ("bank", "the bank of a river", "3D-EX", "test")


def test_ishiwatari_format(tmp_path):
    d = tmp_path / "slang"
    d.mkdir()
    (d / "valid.txt").write_text(
        "yeet%slang.1\tverb\tslang\tto throw with force\t[]\t[]\nlit%slang.7\tadj\tslang\texciting\t[]\t[]\n"
    )
    (d / "valid.eg").write_text("yeet%slang.1\the <TRG> the ball\nlit%slang.7\tthe party was <TRG>\n")
    out = tmp_path / "out"
    assert run("--input", d / "valid.txt", "--output-dir", out) == 0
    recs = load_records(out / "urban" / "valid.jsonl")
    assert [(r.term, r.context, r.definition) for r in recs] == [
        ("yeet", "he yeet the ball", "to throw with force"),
        ("lit", "the party was lit", "exciting"),
    ]
    (d / "valid.eg").write_text("yeet%slang.1\the <TRG> the ball\nlit%slang.8\tthe party was <TRG>\n")
    assert run("--input", d / "valid.txt", "--output-dir", tmp_path / "o2") == 1


def test_rerun_is_skipped_when_up_to_date(data_3dex, tmp_path, capsys):
    args = ("--input", data_3dex / "MultiRD_test.csv", "--output-dir", tmp_path)
    assert run(*args) == 0
    capsys.readouterr()
    assert run(*args) == 0
    assert "up to date" in capsys.readouterr().out


def test_reader_is_streaming(data_3dex):
    it = iter_3dex_csv(data_3dex / "Urban_test.csv")
    line, first = next(it)
    assert line == 2 and first.term == "betty crocker"


def test_missing_input_file(tmp_path, capsys):
    assert run("--input", tmp_path / "nope.csv", "--output-dir", tmp_path / "o") == 1
    assert "nope.csv: no such file" in capsys.readouterr().err


def test_config_errors(tmp_path, capsys):
    cfg = tmp_path / "pre.json"
    cfg.write_text(json.dumps({"input": ["x.csv"], "output_dir": "o", "on_bad_rows": "skip"}, indent=1))
    assert run("--config", cfg) == 2
    assert f"{cfg}:6: on_bad_rows: unknown key (did you mean on_bad_row?)" in capsys.readouterr().err
    assert run("--output-dir", tmp_path) == 2
    assert "give either input files or builtin" in capsys.readouterr().err


def _ishiwatari(folder, records, split="test"):
    """Write records as an Ishiwatari split (`folder/<split>.txt` + `.eg`, the term as <TRG>)."""
    folder.mkdir(parents=True)
    usable = [r for r in records if "%" not in r.term and r.term in r.context][:20]
    txt = "".join(
        f"{r.term}%{folder.name}.{i}\tnoun\t{folder.name}\t{r.definition}\t[]\t[]\n" for i, r in enumerate(usable)
    )
    eg = "".join(f"{r.term}%{folder.name}.{i}\t{r.context.replace(r.term, '<TRG>', 1)}\n" for i, r in enumerate(usable))
    (folder / f"{split}.txt").write_text(txt, encoding="utf-8")
    (folder / f"{split}.eg").write_text(eg, encoding="utf-8")
    return folder / f"{split}.txt", len(usable)


def test_files_sharing_a_name_are_taken_when_their_ids_cannot_collide(data_3dex, wordnet_lexicon, tmp_path):
    """wordnet/test.txt and slang/test.txt (real WordNet glosses and Urban rows): Ishiwatari ids carry
    the source, so both are read; JSONL files of one name with ids of their own too."""
    wordnet, n_wordnet = _ishiwatari(tmp_path / "wordnet", load_records(wordnet_lexicon / "test.jsonl"))
    urban = [it for _, it in iter_3dex_csv(data_3dex / "Urban_test.csv") if hasattr(it, "term")][:200]
    slang, n_slang = _ishiwatari(tmp_path / "slang", urban)
    assert run("--input", wordnet, slang, "--output-dir", tmp_path / "out") == 0
    records = load_records(tmp_path / "out" / "all.jsonl")
    assert len(records) == n_wordnet + n_slang and len({r.id for r in records}) == len(records)
    assert {r.source for r in records} == {"WordNet", "Urban"} and records[0].id == "wordnet-test:1"
    assert len(load_records(tmp_path / "out" / "urban" / "test.jsonl")) == n_slang
    for name in ("a", "b"):  # our own JSONL files (ids of their own) in two folders
        (tmp_path / name).mkdir()
        (tmp_path / name / "test.jsonl").write_text(
            (tmp_path / "out" / f"{'wordnet' if name == 'a' else 'urban'}" / "test.jsonl").read_text(), encoding="utf-8"
        )
    assert (
        run("--input", tmp_path / "a" / "test.jsonl", tmp_path / "b" / "test.jsonl", "--output-dir", tmp_path / "out2")
        == 0
    )
    assert len(load_records(tmp_path / "out2" / "all.jsonl")) == len(records)


def test_only_a_real_id_collision_is_refused(data_3dex, tmp_path, capsys):
    rows = (data_3dex / "Urban_test.csv").read_text(encoding="utf-8").splitlines(keepends=True)[:30]
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "Urban_test.csv").write_text("".join(rows), encoding="utf-8")
    csvs = [tmp_path / name / "Urban_test.csv" for name in ("a", "b")]
    assert run("--input", *csvs, "--output-dir", tmp_path / "o1") == 2
    err = capsys.readouterr().err
    assert f"{csvs[0]} and {csvs[1]} would give the same record ids (Urban_test:...)" in err
    assert run("--input", csvs[0], csvs[0], "--output-dir", tmp_path / "o2") == 2
    assert "given 2 times" in capsys.readouterr().err
    for name in ("a", "b"):  # the original JSONL format: no ids, so they are built from the file name
        lines = [
            json.dumps({"term": r.term, "context": r.context, "definition": r.definition, "source": "Urban"}) + "\n"
            for _, r in itertools.islice(iter_3dex_csv(csvs[0]), 10)
        ]
        (tmp_path / name / "test.jsonl").write_text("".join(lines), encoding="utf-8")
    assert (
        run("--input", tmp_path / "a" / "test.jsonl", tmp_path / "b" / "test.jsonl", "--output-dir", tmp_path / "o3")
        == 1
    )
    err = capsys.readouterr().err
    assert (
        f"{tmp_path / 'b' / 'test.jsonl'}:1: id: 'test:1' has the id prefix 'test:' of {tmp_path / 'a' / 'test.jsonl'}"
    ) in err
    assert not [p for p in (tmp_path / "o3").rglob("*") if p.is_file()]  # nothing half-written
    urban = [r for _, r in iter_3dex_csv(csvs[0])]
    wordnet = [_ishiwatari(tmp_path / name / "wordnet", urban)[0] for name in ("a", "b")]
    assert run("--input", *wordnet, "--output-dir", tmp_path / "o4") == 2
    assert "would give the same record ids (wordnet-test:...)" in capsys.readouterr().err


def _urban_lines(data_3dex, n: int) -> list[str]:
    """The header and the first `n` rows of the real Urban test file."""
    return (data_3dex / "Urban_test.csv").read_text(encoding="utf-8").splitlines(keepends=True)[: n + 1]


def test_csv_column_named_twice_is_refused(data_3dex, tmp_path, capsys):
    import csv
    import io

    rows = list(csv.reader(io.StringIO("".join(_urban_lines(data_3dex, 5)))))
    rows = [rows[0] + ["DEFINITION"]] + [row + [f"another definition {i}"] for i, row in enumerate(rows[1:])]
    src = tmp_path / "Urban_test.csv"
    with open(src, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(rows)
    out = tmp_path / "out"
    for on_bad_row in ("error", "skip"):  # not a bad row: the whole file is ambiguous
        assert run("--input", src, "--output-dir", out, "--on-bad-row", on_bad_row) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [
            f"preprocess: error: {src}:1: DEFINITION: column given 2 times in the header "
            "(WORD, DEFINITION, EXAMPLE, DATASET_NAME, SPLIT_TYPE, DEFINITION)"
        ]
        assert not out.exists()
    assert run("--stats", src) == 1


def test_duplicate_record_ids_are_refused(data_3dex, tmp_path, capsys):
    urban = tmp_path / "Urban_test.csv"
    urban.write_text("".join(_urban_lines(data_3dex, 3)), encoding="utf-8")
    assert run("--input", urban, "--output-dir", tmp_path / "first") == 0
    records = (tmp_path / "first" / "all.jsonl").read_text().splitlines()
    again = tmp_path / "mine.jsonl"  # the same record twice: ids come with the rows
    again.write_text("\n".join([records[0], records[1], records[0]]) + "\n")
    out = tmp_path / "out"
    assert run("--input", again, "--output-dir", out) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"preprocess: error: {again}:3: id: duplicate record id 'Urban_test:1:0' (an earlier row has it)"]
    assert not any(p.is_file() for p in out.rglob("*"))
    assert run("--input", urban, again, "--output-dir", out) == 1  # across files too
    assert f"{again}:1: id: duplicate record id 'Urban_test:1:0'" in capsys.readouterr().err
    assert run("--input", again, "--output-dir", out, "--on-bad-row", "skip") == 0  # skipped only when asked, counted
    summary = json.loads((out / "summary.json").read_text())
    assert summary["records"] == 2 and summary["bad_rows_skipped"] == 1
    assert "duplicate record id 'Urban_test:1:0'" in summary["files"][0]["errors"][0]


@pytest.mark.parametrize("name", ["Urban_test.csv", "test.jsonl", "test.txt"])
def test_empty_input_file_is_refused(tmp_path, capsys, name):
    src = tmp_path / name
    src.write_bytes(b"")
    if name.endswith(".txt"):
        (tmp_path / "test.eg").write_bytes(b"")
    out = tmp_path / "out"
    assert run("--input", src, "--output-dir", out) == 1
    assert capsys.readouterr().err.strip().splitlines() == [f"preprocess: error: {src}: empty file (0 bytes)"]
    assert not out.exists()


def test_csv_without_a_header_row_is_refused_by_the_reader(tmp_path):
    from run_config.errors import DataError

    src = tmp_path / "Urban_test.csv"
    src.write_text("\ufeff", encoding="utf-8")  # only a byte-order mark: not 0 bytes, still no header
    with pytest.raises(DataError, match=f"{src}: empty file: no header row"):
        list(iter_3dex_csv(src))


def test_preprocess_imports_neither_torch_nor_numpy(data_3dex, tmp_path):
    """Preprocessing is pure Python: a 1.3M-row run stays small because no framework is loaded."""
    import subprocess
    import sys

    code = (
        "import sys; from dataset.preprocess import main; "
        f"rc = main(['--input', {str(data_3dex / 'Urban_test.csv')!r}, '--output-dir', {str(tmp_path / 'out')!r}]); "
        "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules)); sys.exit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip().splitlines()[-1] == "[]"
