"""A server's spec resolved once (spawn/spec.py): the profile's CPU and memory capped by the
user's quota, guarantees never above the limits, the profile's fields read through the spec."""

import pytest

from hub_plugins.quota.limits import Limits
from hub_plugins.spawn.profiles import profile_from_dict
from hub_plugins.spawn.spec import ServerSpec, cap

G = 2**30


@pytest.mark.parametrize("value, limit, expected", [(4, 2, 2), (2, 4, 2), (None, 3, 3), (3, None, 3), (None, None, None)])
def test_cap(value, limit, expected):
    assert cap(value, limit) == expected


@pytest.mark.parametrize("resources, limits, expected", [
    ({"cpu_limit": 8, "mem_limit": "32G", "cpu_guarantee": 4, "mem_guarantee": "16G"}, Limits(cpu_limit=2, mem_limit=8 * G),
     (2, 8 * G, 2, 8 * G)),  # capped, guarantees follow the caps down
    ({"cpu_limit": 8, "mem_limit": "32G"}, Limits(), (8, 32 * G, None, None)),  # no quota caps
    ({}, Limits(cpu_limit=4, mem_limit=16 * G), (4, 16 * G, None, None)),  # the quota is the limit
    ({"cpu_guarantee": 1}, Limits(), (None, None, 1, None)),
])
def test_resolve(resources, limits, expected):
    p = profile_from_dict("p", {"display_name": "P", "image": "x:1", "resources": resources})
    s = ServerSpec.resolve(p, limits)
    assert (s.cpu_limit, s.mem_limit, s.cpu_guarantee, s.mem_guarantee) == expected
    assert (s.name, s.image, s.display_name, s.limits) == ("p", "x:1", "P", limits)
