"""Data: vocabulary, split, batches, evaluation windows, finding and verifying the corpus."""

import pytest
import torch

from train import data, text
from train.text import CharTokenizer, DataError


def test_vocabulary_is_the_sorted_set_of_characters_and_round_trips():
    tok = CharTokenizer.from_text("hello, world\n")
    assert tok.chars == tuple(sorted(set("hello, world\n")))
    assert tok.decode(tok.encode("low world")) == "low world"


def test_shakespeare_vocabulary_and_split(shakespeare):
    content, sha = text.read_text(shakespeare)
    assert len(content) == 1_115_394
    assert sha == data.SHAKESPEARE_SHA256
    tok = CharTokenizer.from_text(content)
    assert tok.vocab_size == 65
    assert tok.chars[:2] == ("\n", " ")
    train, val = data.split_ids(torch.arange(len(content)))
    assert len(train) == 1_003_854
    assert len(val) == 111_540
    assert val[0] == train[-1] + 1


def test_batches_are_windows_shifted_by_one():
    ids = torch.arange(100)
    x, y = data.get_batch(ids, 4, 8, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 8)
    assert torch.equal(y, x + 1)
    assert torch.equal(x[:, 1:], x[:, :-1] + 1)


@pytest.mark.parametrize("n, block", [(100, 8), (33, 32), (65, 32), (2, 5)])
def test_eval_windows_predict_every_character_once(n, block):
    windows = text.eval_windows(n, block)
    targets = [s + 1 + i for s, length in windows for i in range(length)]
    assert targets == list(range(1, n))
    assert all(1 <= length <= block for _, length in windows)


def test_eval_batches_cover_the_windows_in_groups():
    batches = list(text.eval_batches(101, 8, 5))
    assert [(s, n) for starts, n in batches for s in starts] == text.eval_windows(101, 8)
    assert all(len(starts) <= 5 for starts, _ in batches)
    assert batches[-1] == ([96], 4)


def test_download_is_verified_and_cached(tmp_path, monkeypatch, shakespeare):
    monkeypatch.setenv("CHARGPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CHARGPT_SHAKESPEARE_URL", shakespeare.as_uri())
    path = data.resolve_data_path(None)
    assert path == tmp_path / "cache" / "tinyshakespeare.txt"
    assert path.read_bytes() == shakespeare.read_bytes()
    monkeypatch.setenv("CHARGPT_SHAKESPEARE_URL", (tmp_path / "gone.txt").as_uri())
    assert data.resolve_data_path(None) == path  # now served from the cache


def test_a_wrong_download_is_refused_and_not_cached(tmp_path, monkeypatch):
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("not shakespeare")
    monkeypatch.setenv("CHARGPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CHARGPT_SHAKESPEARE_URL", wrong.as_uri())
    with pytest.raises(DataError, match="SHA-256 mismatch.*--data PATH"):
        data.resolve_data_path(None)
    assert not (tmp_path / "cache" / "tinyshakespeare.txt").exists()


def test_no_network_says_how_to_supply_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARGPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CHARGPT_SHAKESPEARE_URL", (tmp_path / "missing.txt").as_uri())
    with pytest.raises(DataError, match="could not be downloaded.*pass --data PATH"):
        data.resolve_data_path(None)


@pytest.mark.parametrize(
    "content, message", [(None, "does not exist"), (b"", "is empty"), (b"ab\xff\xfecd", "not UTF-8")]
)
def test_unreadable_text_files_are_refused(tmp_path, content, message):
    path = tmp_path / "data.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        text.read_text(path)


def test_too_short_text_names_the_minimum():
    train, val = data.split_ids(torch.arange(200))
    with pytest.raises(DataError, match="too short for block_size 32.*needs at least 33"):
        data.check_long_enough(train, val, 32)
    data.check_long_enough(train, val, 19)
