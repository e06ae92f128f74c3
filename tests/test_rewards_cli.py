"""rewards.cli: `curriculum score FILE.jsonl [--json] [--preset NAME]`."""

import io
import json
import subprocess
import sys

from rewards.cli import main
from rewards.data import generate_items


def _write(tmp_path, lines):
    f = tmp_path / "in.jsonl"
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return f


def _rec(it, response=None, **extra):
    return json.dumps({"id": it.id, "context": it.context, "question": it.question, "expected_answer": it.expected_answer,
                       "type": it.type, "response": it.reference if response is None else response, "junk": 1, **extra})


def run(args):
    out, err = io.StringIO(), io.StringIO()
    rc = main(args, out=out, err=err)
    return rc, out.getvalue(), err.getvalue()


def test_json_output(tmp_path):
    items = generate_items(9, seed=2)
    f = _write(tmp_path, [_rec(it) for it in items] + [_rec(items[0], response="plain text")])
    rc, out, err = run(["score", str(f), "--json"])
    assert rc == 0 and err == ""
    doc = json.loads(out)
    assert set(doc) == {"metrics", "items"}
    assert [x["id"] for x in doc["items"]] == [it.id for it in items] + [items[0].id]
    assert doc["items"][0]["reward"] == sum(doc["items"][0]["components"].values())
    assert doc["items"][-1]["flags"]["format_ok"] is False
    m = doc["metrics"]["format_error_rate"]
    assert m["value"] == 0.1 and m["lo"] < 0.1 < m["hi"] and m["n"] == 10


def test_table_output_and_preset(tmp_path):
    items = generate_items(3, seed=2)
    f = _write(tmp_path, [_rec(it, response="nope") for it in items])
    rc, out, _ = run([str(f), "--preset", "soft"])
    assert rc == 0
    assert "reward_mean" in out and "abstention_accuracy" in out and "95% CI" in out
    assert "-10.000" in out and "'soft'" in out


def test_upstream_expected_answer_object_and_inferred_type(tmp_path):
    rec = {"context": "DIPG is a pontine tumor.", "question": "What is the capital of France?",
           "expected_answer": {"final": "<think>x</think><proof>y</proof><answer>The provided text does not contain information about the capital of France.</answer>", "proof": ""},
           "response": '<think>t</think><proof>"DIPG is a pontine tumor."</proof><answer>The context does not mention the capital of France.</answer>'}
    f = _write(tmp_path, [json.dumps(rec)])
    rc, out, _ = run(["score", str(f), "--json"])
    item = json.loads(out)["items"][0]
    assert rc == 0 and item["id"] == "in.jsonl:1"
    assert "correct_abstention" in item["components"] and item["flags"]["abstained"]


def test_bad_lines_are_reported_and_rest_scored(tmp_path):
    it = generate_items(1, seed=2)[0]
    f = _write(tmp_path, [_rec(it), "{oops", json.dumps({"context": "c"}), json.dumps([1]), _rec(it, type="martian"), _rec(it)])
    rc, out, err = run(["score", str(f), "--json"])
    assert rc == 1
    assert len(json.loads(out)["items"]) == 2
    lines = err.strip().splitlines()
    assert lines[0].startswith(f"{f}:2: invalid JSON")
    assert lines[1].startswith(f"{f}:3: ") and "response" in lines[1]
    assert lines[2].startswith(f"{f}:4: ")
    assert lines[3].startswith(f"{f}:5: ") and "martian" in lines[3]
    assert "Traceback" not in err


def test_usage_errors_no_traceback(tmp_path):
    rc, _, err = run(["score", str(tmp_path / "missing.jsonl")])
    assert rc == 2 and "cannot read" in err
    rc, _, err = run(["score"])
    assert rc == 2 and "error" in err
    rc, _, err = run(["score", "x", "--preset", "hard"])
    assert rc == 2 and "invalid choice" in err
    f = tmp_path / "bin.jsonl"
    f.write_bytes(b"\xff\xfe\x00bad")
    rc, _, err = run(["score", str(f)])
    assert rc == 2 and "UTF-8" in err


def test_module_entry_point(tmp_path):
    it = generate_items(1, seed=2)[0]
    f = _write(tmp_path, [_rec(it)])
    p = subprocess.run([sys.executable, "-m", "rewards.cli", "score", str(f), "--json"], capture_output=True, text=True)
    assert p.returncode == 0 and json.loads(p.stdout)["items"][0]["reward"] == 50.0


def test_deeply_nested_line_is_a_clear_error_not_a_traceback(tmp_path):
    items = generate_items(3, seed=4)
    nested = '{"response": "x", "context": ' + "[" * 100_000 + "]" * 100_000 + "}"
    f = _write(tmp_path, [_rec(items[0]), nested, _rec(items[1])])
    rc, out, err = run(["score", str(f), "--json"])
    assert rc == 1 and "Traceback" not in err
    assert f"{f}:2: invalid JSON: nested too deeply" in err
    assert len(json.loads(out)["items"]) == 2  # the other lines are still scored


def test_oversized_context_and_line_are_clear_errors(tmp_path, monkeypatch):
    import rewards.cli as cli

    items = generate_items(2, seed=5)
    big = json.dumps({"context": "MRI showed a lesion. " * 60_000, "question": "q?", "expected_answer": "a",
                      "response": "<think></think><proof>\"MRI showed a lesion.\"</proof><answer>a</answer>"})
    f = _write(tmp_path, [big, _rec(items[0])])
    rc, out, err = run(["score", str(f)])
    assert rc == 1 and f"{f}:1: \"context\" is 1,260,000 characters; the limit is 1,000,000" in err
    monkeypatch.setattr(cli, "MAX_LINE_CHARS", 1000)
    rc, out, err = run(["score", str(f)])
    assert rc == 1 and f"{f}:1: line is" in err and "the limit is 1,000" in err


def test_many_quotes_against_a_large_context_are_scored(tmp_path):
    """The work per quote is bounded by the trigram index (at most MAX_TRIGRAM_POSITIONS places
    per trigram), not by the context size: 2,000 quotes against a 900 KB context of repeated
    sentences are scored, each judged against the context."""
    ctx = "".join(f"Patient {i} received ONC201 at {i} mg weekly with stable disease. " for i in range(14_000))
    quotes = "\n".join(f'"Patient {i} received ONC201 at {i} mg weekly with stable disease."' for i in range(0, 14_000, 7))
    bad = '"Patient 5 received ONC201 at 7 mg weekly with stable disease."'
    rec = {"context": ctx, "question": "What dose did patient 7 receive?", "expected_answer": "7 mg weekly"}
    good_resp = f"<think></think><proof>{quotes}</proof><answer>7 mg weekly</answer>"
    bad_resp = f"<think></think><proof>{quotes}\n{bad}</proof><answer>7 mg weekly</answer>"
    f = _write(tmp_path, [json.dumps({**rec, "response": good_resp}), json.dumps({**rec, "response": bad_resp})])
    rc, out, err = run(["score", str(f), "--json"])
    assert rc == 0, err
    a, b = json.loads(out)["items"]
    assert a["flags"]["grounded"] and not a["flags"]["hallucination"]
    assert not b["flags"]["grounded"] and b["flags"]["hallucination"]  # a number swapped in one quote


def test_jobs_give_the_same_output_as_one_process(tmp_path, monkeypatch):
    """--jobs N scores chunks in N worker processes and collects them in file order: the JSON,
    the table, the messages about bad lines (with their line numbers) and the exit status are
    those of --jobs 1, over many chunks."""
    import rewards.cli as cli

    monkeypatch.setattr(cli, "CHUNK_LINES", 3)  # many chunks from a small file (workers are forked)
    items = generate_items(12, seed=7)
    lines = []
    for k, it in enumerate(items):
        lines.append(_rec(it) if k % 3 else _rec(it, response="<think>t</think><proof></proof><answer>no idea</answer>"))
        if k in (2, 7):
            lines += ["{oops", "", json.dumps({"context": "c"})]
    f = _write(tmp_path, lines)
    for mode in (["--json"], []):
        rc1, out1, err1 = run(["score", str(f), *mode])
        assert rc1 == 1 and err1.count("invalid JSON") == 2
        for jobs in ("2", "3", "0"):
            rc, out, err = run(["score", str(f), *mode, "--jobs", jobs])
            assert (rc, out, err) == (rc1, out1, err1), jobs
    doc = json.loads(run(["score", str(f), "--json", "--jobs", "2"])[1])
    assert [x["id"] for x in doc["items"]] == [it.id for it in items]


def test_bad_jobs_values_are_usage_errors(tmp_path):
    it = generate_items(1, seed=2)[0]
    f = _write(tmp_path, [_rec(it)])
    for bad, words in (("-2", "cannot be negative"), ("two", "whole number"), ("1.5", "whole number"), ("100000", "at most")):
        rc, out, err = run(["score", str(f), "--jobs", bad])
        assert rc == 2 and out == "" and words in err and "Traceback" not in err, (bad, err)
        assert len(err.strip().splitlines()) == 1
