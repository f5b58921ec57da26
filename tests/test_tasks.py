"""The "which keyword comes next" task builder (jaxlogits/tasks.py)."""

import collections

import pytest

from jaxlogits import data, tasks


@pytest.fixture(scope="module")
def heldout():
  files = data.heldout_files()
  return dict(zip(files, data.load_bytes(files)))


def test_same_seed_same_task_other_seed_other_task():
  a = tasks.build_task(40, seed=3)
  assert tasks.build_task(40, seed=3) == a
  b = tasks.build_task(40, seed=4)
  assert b != a
  assert {(q.file, q.offset) for q in a} != {(q.file, q.offset) for q in b}


@pytest.mark.parametrize("max_len", [256, 128])
def test_questions_are_well_formed_and_fit_the_context(heldout, max_len):
  qs = tasks.build_task(200, seed=0, max_len=max_len)
  assert len(qs) == 200
  assert len({(q.file, q.offset) for q in qs}) == 200  # distinct sites
  options = {k + " " for k in tasks.KEYWORDS}
  for q in qs:
    assert len(q.options) == 4 and len(set(q.options)) == 4
    assert set(q.options) <= options
    assert 0 <= q.label < 4 and isinstance(q.label, int)
    assert len(q.context) == min(tasks.DEFAULT_CONTEXT_BYTES, max_len - 8)
    assert len(q.prompt_ids) + max(len(o) for o in q.option_ids) <= max_len
    assert q.prompt_ids[0] == 256 and q.prompt_ids[1:] == list(q.context)
    # exactly one option is what the file says next
    src = heldout[q.file]
    assert [src.startswith(o.encode(), q.offset) for o in q.options].count(True) == 1
    assert src.startswith(q.answer.encode(), q.offset)


def test_prompts_come_from_heldout_files_only(heldout):
  train = set(data.train_files())
  for q in tasks.build_task(200, seed=1):
    assert q.file in heldout and q.file not in train and data.is_heldout(q.file)
    assert heldout[q.file][q.offset - len(q.context):q.offset] == q.context


def test_the_answer_is_not_given_away_by_its_position():
  labels = collections.Counter(q.label for q in tasks.build_task(400, seed=0))
  assert set(labels) == {0, 1, 2, 3} and min(labels.values()) > 60
  answers = collections.Counter(q.answer for q in tasks.build_task(400, seed=0))
  assert len(answers) > 8  # many different keywords are asked for


def test_find_sites_takes_code_words_followed_by_a_space_only():
  src = (b"# if in a comment\n"
         b"s = 'for in a string'\n"
         b"if x in y:\n"          # if, in
         b"  return\n"            # not followed by a space
         b"  x = int(y) or isin\n"  # or; int and isin are other words
         b"import  os\n")        # import
  sites = tasks.find_sites(src)
  assert [w for _, w in sites] == ["if", "in", "or", "import"]
  for off, w in sites:
    assert src.startswith(w.encode() + b" ", off)
  assert tasks.find_sites(b"x = '\xc3\xa9' if y else z\n") == [(9, "if")]  # offsets count bytes
  assert tasks.find_sites(b'def f():\n  """if unterminated\n') == [(0, "def")]  # no raise
  assert tasks.find_sites(b"self .x\n", ["self"]) == [(0, "self")]


def test_sources_and_options():
  src = {"a.py": b"import os\nif a is b:\n  return c if d else e\nfor x in y: pass\n" * 5}
  qs = tasks.build_task(10, seed=2, context_bytes=5, num_options=3, sources=src)
  assert all(len(q.options) == 3 and q.file == "a.py" for q in qs)
  assert all(src["a.py"].startswith(q.answer.encode(), q.offset) for q in qs)
  qs = tasks.build_task(5, seed=0, context_bytes=4, num_options=2, keywords=["if", "for"],
                        sources=src)
  assert all(set(q.options) == {"if ", "for "} for q in qs)


@pytest.mark.parametrize("kwargs,message", [
    ({"num_questions": 0}, "num_questions must be an int >= 1"),
    ({"seed": -1}, "seed must be an int >= 0"),
    ({"context_bytes": 0}, "context_bytes must be an int >= 1"),
    ({"context_bytes": 249}, "at most 248 context bytes fit"),
    ({"max_len": 8}, "leaves no room for context"),
    ({"num_options": 1}, "num_options must be an int >= 2"),
    ({"num_options": 23}, "exceeds the number of keywords"),
    ({"keywords": ["if", "if"]}, "must be distinct"),
    ({"keywords": ["not a word"]}, "Python identifier"),
    ({"num_questions": 10 ** 6}, "hold only"),
])
def test_bad_values_raise(kwargs, message):
  with pytest.raises(ValueError, match=message):
    tasks.build_task(**kwargs)
