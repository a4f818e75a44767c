"""Issue 27 item 6: every benchmark and sweep field is checked with the rest of the
sweep (one line naming the field), before any work."""

import pytest

from detbench.config.grid import expand_grid
from detbench.errors import ConfigError
from tests.config.test_grid import SWEEP, sweep


@pytest.mark.parametrize(
    "extra, message",
    [
        ("benchmark { num_runs: 0 }", "test.pbtxt: benchmark.num_runs: 0 is outside 1..100000"),
        ("benchmark { num_warmup: -1 }", "benchmark.num_warmup: -1 is outside 0..100000"),
        ("benchmark { intra_op_threads: -2 }", "benchmark.intra_op_threads: -2 is outside"),
        ("benchmark { inter_op_threads: 5000 }", "benchmark.inter_op_threads: 5000 is outside"),
        (
            "benchmark { num_timing_images: 0 }",
            "benchmark.num_timing_images: 0 is outside 1..10000",
        ),
        ("train_steps: 2000000000", "test.pbtxt: train_steps: 2000000000 is outside 0..10000000"),
        (
            'grid { train_steps: -3 axis { name: "resolution" values: "300" } }',
            "grid[0].train_steps: -3 is outside 0..10000000",
        ),
        ('out_dir: " "', "test.pbtxt: out_dir: empty"),
    ],
)
def test_sweep_fields_out_of_range_are_one_line_errors(extra, message):
    text = SWEEP.replace("train_steps: 7\n", "") + extra
    with pytest.raises(ConfigError) as e:
        expand_grid(sweep(text), "test.pbtxt", check_registry=False)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_an_override_for_one_meta_architecture_applies_to_its_bases_only():
    text = SWEEP + 'override: "model.faster_rcnn.rpn.max_proposals=50"\n'
    cells = expand_grid(sweep(text), "test.pbtxt", check_registry=False).cells
    by_arch = {}
    for c in cells:
        by_arch.setdefault(c.meta_arch, []).append(c.train_pipeline)
    assert {p.model.WhichOneof("model") for p in by_arch["ssd"]} == {"ssd"}  # still an SSD
    assert {p.model.faster_rcnn.rpn.max_proposals for p in by_arch["faster_rcnn"]} == {50}
    assert 50 not in {p.model.rfcn.rpn.max_proposals for p in by_arch["rfcn"]}
    assert all(p.train_config.batch_size == 1 for ps in by_arch.values() for p in ps)


def test_an_override_for_a_meta_architecture_no_base_has_is_refused():
    text = SWEEP + 'override: "model.cascade_rcnn.num_classes=3"\n'
    with pytest.raises(ConfigError) as e:
        expand_grid(sweep(text), "test.pbtxt", check_registry=False)
    assert str(e.value) == (
        "test.pbtxt: override 'model.cascade_rcnn.num_classes=3': addresses cascade_rcnn, "
        "but no base pipeline is a cascade_rcnn model (bases: faster_rcnn, rfcn, ssd)"
    )
