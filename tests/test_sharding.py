"""The sharded train step equals the 1-device step (8 forced host devices, subprocess).

Also unit tests of the mesh and FSDP rules, which need no devices.
"""

import pytest
from _scripts import launch
from jax.sharding import PartitionSpec as P

from flowjax.train import sharding


def test_fsdp_rule_shards_largest_divisible_axis():
    assert sharding.fsdp_spec((512, 256), 4, min_size=1024) == P("fsdp", None)
    assert sharding.fsdp_spec((256, 512), 4, min_size=1024) == P(None, "fsdp")
    assert sharding.fsdp_spec((3, 3, 64, 128), 4, min_size=1024) == P(None, None, None, "fsdp")
    # 130 is not divisible by 4: the next largest divisible axis is used.
    assert sharding.fsdp_spec((130, 64), 4, min_size=1024) == P(None, "fsdp")
    # Small tensors, scalars, nothing divisible, or fsdp = 1: replicated.
    assert sharding.fsdp_spec((256,), 4, min_size=1024) == P()
    assert sharding.fsdp_spec((), 4, min_size=0) == P()
    assert sharding.fsdp_spec((129, 131), 4, min_size=1) == P()
    assert sharding.fsdp_spec((512, 256), 1, min_size=1) == P()


def test_mesh_shape():
    assert sharding.mesh_shape(-1, 1, 8) == (8, 1)
    assert sharding.mesh_shape(-1, 4, 8) == (2, 4)
    assert sharding.mesh_shape(2, 4, 8) == (2, 4)
    with pytest.raises(ValueError, match="must equal the number of devices"):
        sharding.mesh_shape(3, 1, 8)
    with pytest.raises(ValueError, match="does not divide"):
        sharding.mesh_shape(-1, 3, 8)


@pytest.mark.slow
def test_sharded_step_equals_single_device():
    out = launch.run("sharded_step.py", num_devices=8)
    assert out["min_param_change"] > 1e-4  # the steps did train every parameter
    for name in ("data8", "data2_fsdp4"):
        assert out[name]["step"] == 6
        assert out[name]["max_rel_diff"] < 1e-5, (name, out[name])
    assert out["data8"]["sharded"] == []
    assert out["data2_fsdp4"]["sharded"] == ["P('fsdp', None)", "P(None, 'fsdp')"]
    # A checkpoint of the fsdp state restores into the same sharding, bit for bit.
    assert out["restore"] == {"equal": True, "same_sharding": True}
