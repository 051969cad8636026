"""The image list cache behind 'is this profile's image built?'."""

from hub_plugins.spawners.docker.images import ImageCache, missing_image_message


class FakeClient:
    def __init__(self, tags, fail=None):
        self.tags, self.fail, self.calls = tags, fail, 0

    def images(self):
        self.calls += 1
        if self.fail:
            raise self.fail
        return [{"RepoTags": self.tags}]


def test_present_and_cached():
    c = FakeClient(["gpulab/base:0.1.0"])
    cache = ImageCache(lambda: c, ttl=60)
    assert cache.present("gpulab/base:0.1.0") == (True, "")
    assert cache.present("gpulab/base:0.1.0") == (True, "")
    assert c.calls == 1


def test_missing_image_is_rechecked_after_a_second(monkeypatch):
    c = FakeClient([])
    cache = ImageCache(lambda: c, ttl=60)
    assert cache.present("gpulab/pytorch:1") == (False, "")
    cache._at -= 2  # `make images` may have built it meanwhile
    c.tags = ["gpulab/pytorch:1"]
    assert cache.present("gpulab/pytorch:1") == (True, "")


def test_engine_down_is_a_reason():
    cache = ImageCache(lambda: FakeClient([], fail=ConnectionError("no socket")), ttl=60)
    ok, why = cache.present("gpulab/base:0.1.0")
    assert not ok and "Docker engine is not reachable" in why and "docker.host" in why


def test_message_says_what_to_do():
    assert missing_image_message("gpulab/pytorch:2.5.1-cuda12.4") == (
        "image gpulab/pytorch:2.5.1-cuda12.4 is not built; run `make images` (or ask an admin to)")
