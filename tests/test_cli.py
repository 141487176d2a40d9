"""The command line: inspect and diff checkpoints."""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import numpy as np
from safetensors.numpy import save_file

import fastload


def run(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "fastload", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
    )


def model():
    tree = {
        "wte": np.zeros((10, 4), np.float32),
        "h": [{"w": np.zeros((4, 4)), "b": np.zeros(4)} for _ in range(11)],
        "ln": {"g": np.zeros(4, np.float16), "eps": 1e-5},
    }
    tree["head"] = {"weight": tree["wte"]}
    return tree


def test_inspect_prints_the_tree_with_shapes_dtypes_bytes_ties_and_totals(tmp_path):
    path = tmp_path / "m.safetensors"
    fastload.save(path, model())
    result = run("inspect", path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{path}: 24 tensors, 1.9 kB, 1 tied"
    body = [line.split() for line in lines[1:]]
    assert ["h"] in body and ["2"] in body
    assert ["wte", "(10,", "4)", "float32", "160", "B"] in body
    assert ["weight", "tied", "to", "wte"] in body
    assert ["g", "(4,)", "float16", "8", "B"] in body
    # Layers in numeric order: 2 before 10.
    names = [row[0] for row in body if len(row) == 1]
    assert names.index("2") < names.index("10")


def test_diff_shows_structure_shape_and_dtype_differences(tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    fastload.save(a, model())
    changed = model()
    changed["h"][3]["w"] = np.zeros((4, 5))
    changed["ln"]["g"] = np.zeros(4, np.float32)
    del changed["h"][10]["b"]
    changed["extra"] = np.zeros(2)
    fastload.save(b, changed)
    result = run("diff", a, b)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"+ extra: only in {b}",
        "~ h.3.w: shape (4, 4) vs (4, 5)",
        f"- h.10.b: only in {a}",
        "~ ln.g: dtype float16 vs float32",
        "22 arrays match, 4 differ",
    ]
    same = run("diff", a, a)
    assert same.returncode == 0 and same.stdout.strip() == "25 arrays match, 0 differ"


def test_diff_against_a_model_given_as_module_and_name(tmp_path):
    (tmp_path / "mymodels.py").write_text(
        "import numpy as np\n"
        "def build():\n"
        "    return {'wte': np.zeros((10, 4), np.float32), 'extra': np.zeros(3)}\n"
    )
    path = tmp_path / "m.safetensors"
    fastload.save(path, {"wte": np.zeros((10, 4), np.float32)})
    result = run("diff", path, "mymodels:build", cwd=tmp_path)
    assert result.returncode == 1
    assert "+ extra: only in mymodels:build" in result.stdout


def test_errors_name_the_file_and_exit_2(tmp_path):
    missing = tmp_path / "missing.safetensors"
    result = run("inspect", missing)
    assert result.returncode == 2
    assert str(missing) in result.stderr
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x0a" + b"\0" * 7 + b"{not json}")
    result = run("diff", bad, missing)
    assert result.returncode == 2 and "not valid JSON" in result.stderr
    header = json.dumps(
        {
            "__metadata__": {"fastload.ties": "5"},
            "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
        }
    ).encode()
    bad.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)
    for args in (("inspect", bad), ("diff", bad, bad)):
        result = run(*args)
        assert result.returncode == 2 and "metadata is invalid" in result.stderr
        assert "Traceback" not in result.stderr


def test_inspect_prints_a_key_of_many_parts_in_linear_space(tmp_path):
    key = ".".join(["k"] * 20000)
    header = json.dumps({key: {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    path = tmp_path / "deep.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)
    result = run("inspect", path)
    assert result.returncode == 0
    assert len(result.stdout) < 20000 * 80  # indented by 32 levels at most


def test_parts_of_digits_sort_by_number_however_long_or_whatever_the_script(tmp_path):
    long = "9" * 5000  # beyond the digits Python converts to an int
    names = ["h.10", "h.2", f"h.{long}", "h.\u00b2", "h.1\u0663"]  # superscript, Arabic-Indic
    path = tmp_path / "names.safetensors"
    save_file({name: np.zeros(1, np.float32) for name in names}, str(path))
    for args in (("inspect", path), ("diff", path, path)):
        result = run(*args)
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    shown = [line.split()[0] for line in run("inspect", path).stdout.splitlines()[1:-1]]
    numbered = [name for name in shown if name[:1].isdigit()]
    assert numbered[:2] == ["2", "10"] and numbered[2] == long, shown


def assert_one_line_error(result, *texts):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for text in texts:
        assert text in lines[0]


def test_a_target_that_cannot_be_built_is_a_one_line_error(tmp_path):
    (tmp_path / "mymodels.py").write_text(
        "def needs_size(n):\n"
        "    return {}\n"
        "def fails():\n"
        "    raise RuntimeError('no weights here')\n"
        "def cyclic():\n"
        "    tree = {}\n"
        "    tree['self'] = tree\n"
        "    return tree\n"
    )
    (tmp_path / "broken.py").write_text("raise ValueError('broken module')\n")
    # A script that exits as it is imported (it parses its own arguments, say).
    (tmp_path / "script.py").write_text("raise SystemExit(0)\n")
    path = tmp_path / "m.safetensors"
    fastload.save(path, {"wte": np.zeros((10, 4), np.float32)})
    for target, texts in {
        ":": ["':': a target is written module:name"],
        "mymodels:": ["a target is written module:name"],
        "mymodels:needs_size": ["needs_size() raised TypeError", "no arguments"],
        "mymodels:fails": ["mymodels:fails: calling fails() raised RuntimeError: no weights"],
        "mymodels:absent": ["mymodels has no absent"],
        "mymodels:cyclic": ["mymodels:cyclic: cannot take its state: ArgumentError", "itself"],
        "nosuchmodule:build": ["cannot import nosuchmodule: ModuleNotFoundError"],
        "broken:build": ["cannot import broken: ValueError: broken module"],
        "script:build": ["cannot import script: SystemExit: 0"],
    }.items():
        assert_one_line_error(run("diff", path, target, cwd=tmp_path), *texts)


def test_inspect_and_diff_refuse_a_file_that_load_refuses(tmp_path):
    entry = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
    for metadata, text in (
        ({"fastload.ties": '{"v": "nothing"}'}, "KeyError('nothing')"),
        ({"fastload.ties": '{"w": "w"}'}, "ties 'w' to 'w'"),
        ({"fastload.ties": '{"w.x": "w"}'}, "'w.x' is below 'w'"),
        ({"fastload.state": '{"w": ["int", 1]}'}, "holds a value for 'w'"),
    ):
        header = json.dumps({"__metadata__": metadata, "w": entry}).encode()
        bad = tmp_path / "forged.safetensors"
        bad.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)
        for args in (("inspect", bad), ("diff", bad, bad)):
            result = run(*args)
            assert result.returncode == 2 and text in result.stderr, result.stderr
            assert "Traceback" not in result.stderr and result.stdout == ""


def test_a_shard_index_nested_too_deep_is_an_error_without_a_traceback(tmp_path):
    index = tmp_path / "m.safetensors.index.json"
    index.write_text('{"weight_map": ' + "[" * 100_000 + "]" * 100_000 + "}")
    result = run("inspect", index)
    assert result.returncode == 2 and "not a shard index" in result.stderr
    assert "Traceback" not in result.stderr


def test_names_that_are_not_printable_are_shown_escaped(tmp_path):
    """A file's names cannot forge rows of the listing or send codes to the terminal."""
    forged = "w\nsecret.weight    (1000, 1000)   float32"
    path = tmp_path / "forged.safetensors"
    save_file({forged: np.zeros(1, np.float32), "x\x1b[2J": np.zeros(1, np.float32)}, str(path))
    other = tmp_path / "other.safetensors"
    save_file({"y": np.zeros(1, np.float32)}, str(other))
    for result in (run("inspect", path), run("diff", path, other)):
        assert "\x1b" not in result.stdout and "'x\\x1b[2J'" in result.stdout
        assert "\nsecret" not in result.stdout and "'w\\nsecret" in result.stdout


def test_main_prints_to_the_stdout_of_the_moment_and_file_problems_without_load_words(
    tmp_path, capsys
):
    from fastload._cli import main

    path = tmp_path / "m.safetensors"
    fastload.save(path, {"wte": np.zeros((10, 4), np.float32)})
    assert main(["inspect", str(path)]) == 0
    assert "wte" in capsys.readouterr().out
    (tmp_path / "bad.safetensors").write_bytes(b"garbage\n")
    assert main(["inspect", str(tmp_path / "bad.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'bad.safetensors'}: the header is larger")
    assert "nothing was loaded" not in err


def test_diff_compares_a_state_dict_target_as_flat_keys_and_refuses_a_non_model(tmp_path):
    (tmp_path / "targets.py").write_text(
        "import numpy as np\n"
        "def flat():\n"
        "    return {'fc.weight': np.zeros((2, 2), np.float32), 'fc.bias': np.zeros(2)}\n"
        "def nothing():\n"
        "    return None\n"
    )
    path = tmp_path / "m.safetensors"
    fastload.save(path, {"fc": {"weight": np.ones((2, 2), np.float32), "bias": np.ones(2)}})
    done = run("diff", path, "targets:flat", cwd=tmp_path)
    assert (done.returncode, done.stdout.strip()) == (0, "2 arrays match, 0 differ")
    assert_one_line_error(
        run("diff", path, "targets:nothing", cwd=tmp_path), "gave NoneType, not a model"
    )


def test_a_reader_that_stops_early_ends_inspect_quietly(tmp_path):
    path = tmp_path / "many.safetensors"
    fastload.save(path, {f"k{i}": np.zeros(1) for i in range(20000)})
    reader = subprocess.Popen(
        [sys.executable, "-m", "fastload", "inspect", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert reader.stdout.readline().startswith(str(path).encode())
    reader.stdout.close()  # as `| head -1` does
    assert reader.wait(timeout=60) == 0
    assert reader.stderr.read() == b""


def test_one_long_name_does_not_pad_every_row_of_inspect(tmp_path):
    path = tmp_path / "m.safetensors"
    fastload.save(path, {"x" * 500: np.zeros(1), "w": np.zeros(2)})
    done = run("inspect", path)
    rows = {line.split()[0]: line for line in done.stdout.splitlines()[1:]}
    assert len(rows["w"]) < 100


def test_diff_takes_a_tie_stored_once_for_the_same_array(tmp_path):
    (tmp_path / "tiedmodel.py").write_text(
        "import numpy as np\n"
        "def build():\n"
        "    wte = np.zeros((4, 2), np.float32)\n"
        "    return {'wte': wte, 'head': {'weight': wte}, 'b': np.zeros(2)}\n"
    )
    once = tmp_path / "once.safetensors"  # as save_model stores a tie: one name only
    save_file({"wte": np.ones((4, 2), np.float32), "b": np.ones(2)}, str(once))
    done = run("diff", once, "tiedmodel:build", cwd=tmp_path)
    assert (done.returncode, done.stdout.strip()) == (0, "2 arrays match, 0 differ")
    save_file({"wte": np.ones((4, 2), np.float16), "b": np.ones(2)}, str(once))
    done = run("diff", once, "tiedmodel:build", cwd=tmp_path)
    assert done.returncode == 1 and "~ wte: dtype float16 vs float32" in done.stdout
    # `save_model` keeps a tie's later name, not its first: that loads, and matches too.
    save_file({"head.weight": np.ones((4, 2), np.float32), "b": np.ones(2)}, str(once))
    fastload.loadmodel(fastload.state(build_tied()), str(once))
    ours = tmp_path / "ours.safetensors"
    fastload.save(ours, build_tied())
    for a, b in ((once, "tiedmodel:build"), ("tiedmodel:build", once), (ours, once)):
        done = run("diff", a, b, cwd=tmp_path)
        assert (done.returncode, done.stdout.strip()) == (0, "2 arrays match, 0 differ")


def test_diff_takes_a_view_alike_of_the_same_memory_for_a_tie(tmp_path):
    """A load ties views of the same memory (``b.weight.data = a.weight.data``), so a
    file holding one of their names has no difference from the model."""
    (tmp_path / "viewtied.py").write_text(
        "import numpy as np\n"
        "def build():\n"
        "    wte = np.zeros((4, 2), np.float32)\n"
        "    return {'wte': wte, 'head': {'weight': wte[:]}, 'b': np.zeros(2)}\n"
    )
    once = tmp_path / "once.safetensors"
    save_file({"wte": np.ones((4, 2), np.float32), "b": np.ones(2)}, str(once))
    done = run("diff", once, "viewtied:build", cwd=tmp_path)
    assert (done.returncode, done.stdout.strip()) == (0, "2 arrays match, 0 differ")


def build_tied():
    wte = np.zeros((4, 2), np.float32)
    return {"wte": wte, "head": {"weight": wte}, "b": np.zeros(2)}


def test_diff_compares_a_callable_model_as_it_is_and_builds_from_functions_and_classes(
    tmp_path,
):
    """A model whose call runs it (an nn.Module's forward) is no factory."""
    (tmp_path / "callables.py").write_text(
        "import numpy as np\n"
        "class Dense:\n"
        "    def __init__(self):\n"
        "        self.weight = np.zeros((2, 3), np.float32)\n"
        "    def __call__(self, x):\n"
        "        return self.weight @ x\n"
        "model = Dense()\n"
    )
    path = tmp_path / "d.safetensors"
    fastload.save(path, {"weight": np.ones((2, 3), np.float32)})
    for target in ("callables:model", "callables:Dense"):
        done = run("diff", path, target, cwd=tmp_path)
        assert (done.returncode, done.stdout.strip()) == (0, "1 array matches, 0 differ")
