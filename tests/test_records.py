import json

import pytest

from archbench.records import RecordError, atomic_write_text, load_record, new_record, save_record


def test_round_trip_and_no_temporary_left(tmp_path):
    rec = new_record("x", {"models": ["mlp"]}, {"python": "3"}, {"name": "d", "test_labels": [0, 1]})
    rec["models"]["mlp"] = {"measurements": None, "measurement_error": "x", "units": []}
    save_record(rec, tmp_path)
    assert load_record(tmp_path) == rec
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    p = tmp_path / "f.json"
    atomic_write_text(p, "old")


    with pytest.raises(TypeError):
        atomic_write_text(p, 123)  # not text: the write fails midway
    assert p.read_text() == "old"
    assert [q.name for q in tmp_path.iterdir()] == ["f.json"]


@pytest.mark.parametrize("content, words", [("{not json", "not valid JSON"),
                                             (json.dumps({"schema": "other"}), "schema 'other'")])
def test_load_record_rejects_bad_files(tmp_path, content, words):
    (tmp_path / "results.json").write_text(content)
    with pytest.raises(RecordError, match=words) as err:  # bad input data: exit 3, naming the file
        load_record(tmp_path)
    assert err.value.exit_code == 3 and str(err.value).startswith(f"{tmp_path / 'results.json'}: ")
