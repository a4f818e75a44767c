"""Top-level commands: ``python -m detbench list`` and the registry's messages."""

import subprocess
import sys

import pytest

from detbench.errors import RegistryError
from detbench.registry import Registry


def test_registry_miss_lists_known_names_nearest_first():
    reg = Registry("widget")

    @reg.register("resnet50_v1")
    class A:
        pass

    @reg.register("mobilenet_v2")
    class B:
        pass

    assert reg.get("resnet50_v1") is A and A.registered_name == "resnet50_v1"
    with pytest.raises(RegistryError) as e:
        reg.get("resnet_50")
    assert str(e.value) == "unknown widget 'resnet_50'; known: resnet50_v1, mobilenet_v2"
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("mobilenet_v2")(B)
    assert "none is registered" in Registry("x").unknown_message("y")


def test_list_shows_extractors_with_strides_and_meta_archs():
    out = subprocess.run([sys.executable, "-m", "detbench", "list"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    archs = lines[1 : lines.index("feature extractors:")]
    described = {line.split()[0]: line.split(None, 1)[1:] for line in archs}
    assert set(described) == {"ssd", "faster_rcnn", "rfcn", "cascade_rcnn"}
    assert all(described.values()), described  # each has a one-line description
    start = lines.index("feature extractors:") + 2  # skip the column header
    end = next(i for i, l in enumerate(lines) if l.startswith("sweep axes"))
    table = {l.split()[0]: l.split() for l in lines[start:end]}
    assert table["resnet101_v1"][1] == "8/16/32" and table["resnet101_v1"][2] == "yes"
    assert table["vgg16"][1] == "16" and table["vgg16"][2] == "no"
    assert table["inception_resnet_v2"][1] == "8/16"
    assert len([n for n in table if n != "name"]) == 9


def _leaves(table, prefix=()):
    for name, (target, _) in table.items():
        if isinstance(target, dict):
            yield from _leaves(target, prefix + (name,))
        else:
            yield prefix + (name,)


def test_every_subcommand_help_shows_an_example(capsys):
    from detbench.cli import COMMANDS, main

    leaves = list(_leaves(COMMANDS))
    assert ("data", "synthetic") in leaves and ("sweep",) in leaves and len(leaves) >= 16
    for words in leaves:
        with pytest.raises(SystemExit) as e:
            main([*words, "--help"])
        out = capsys.readouterr().out
        assert e.value.code == 0, words
        assert "usage:" in out and "example:" in out, words
        example = out.split("example:", 1)[1]
        assert ("detbench " + " ".join(words)).split() == example.split()[: len(words) + 1], words


def test_unknown_subcommand_lists_the_known_ones():
    from detbench.cli import COMMANDS

    out = subprocess.run(
        [sys.executable, "-m", "detbench", "pretrian"], capture_output=True, text=True
    )
    assert out.returncode == 2
    assert out.stderr.startswith("detbench: unknown command 'pretrian'; known: sweep, train")
    assert all(name in out.stderr for name in COMMANDS)
    out = subprocess.run(
        [sys.executable, "-m", "detbench", "data", "to_tfrecord"], capture_output=True, text=True
    )
    assert out.returncode == 2 and "known: synthetic, to-tfrecord" in out.stderr


def test_no_subcommand_prints_the_table_and_exits_2(capsys):
    from detbench.cli import main

    assert main([]) == 2
    err = capsys.readouterr().err
    assert "usage: detbench COMMAND" in err and "  validate " in err
    assert main(["--help"]) == 0 and "  sweep " in capsys.readouterr().out
