"""Reading preprocessed records: a repeated id is refused, naming both lines."""

from __future__ import annotations

from itertools import islice

import pytest

from dataset.readers import iter_3dex_csv
from dataset.records import Record, iter_records, load_records
from run_config.errors import DataError


def test_repeated_id_names_the_file_and_both_lines(data_3dex, tmp_path):
    records = [item for _, item in islice(iter_3dex_csv(data_3dex / "Urban_test.csv"), 40) if isinstance(item, Record)][
        :3
    ]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(r.to_json() + "\n" for r in records + [records[1]]), encoding="utf-8")
    with pytest.raises(DataError, match=rf"{path}:4: id: duplicate record id '{records[1].id}' \(first on line 2\)"):
        load_records(path)
    path.write_text("".join(r.to_json() + "\n" for r in records), encoding="utf-8")
    assert [line for line, _ in iter_records(path)] == [1, 2, 3] and load_records(path) == records
