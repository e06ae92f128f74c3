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
