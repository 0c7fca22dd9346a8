"""Registry: listing complete versions only, atomic publish (also under SIGKILL), the ACTIVE pointer.

Adapters here are fake bytes: the registry never opens them, it only checks they exist.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hitl_app.core.errors import NotFoundError
from hitl_app.versions.registry import ADAPTER_WEIGHTS, MANIFEST, Registry
from hitl_app.feedback.records import BASE_VERSION
from hitl_app.versions.manifest import Manifest, RoundMetrics

REPO = Path(__file__).resolve().parent.parent


def make_manifest(store_cursor: int = 0) -> Manifest:
    """A minimal manifest; ``version`` is filled in by publish."""
    return Manifest(
        version="pending",
        parent="base",
        base_model="x",
        record_ids=[],
        store_cursor=store_cursor,
        config={},
        metrics=RoundMetrics(duration_s=1.0),
    )


def publish_fake(registry: Registry, store_cursor: int = 0) -> str:
    """Stage fake adapter weights and publish them; returns the new version name."""
    staging = registry.staging_dir()
    (staging / ADAPTER_WEIGHTS).write_bytes(b"not really safetensors")
    return registry.publish(staging, make_manifest(store_cursor))


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "checkpoints")


# ----- listing -----


@pytest.mark.parametrize(
    "name, files, listed",
    [
        pytest.param("v0001", [MANIFEST, ADAPTER_WEIGHTS], True, id="complete"),
        pytest.param("v0001", [ADAPTER_WEIGHTS], False, id="no-manifest"),
        pytest.param("v0001", [MANIFEST], False, id="no-weights"),
        pytest.param("v0001", [], False, id="empty"),
        pytest.param(".staging-abc123", [MANIFEST, ADAPTER_WEIGHTS], False, id="staging"),
        pytest.param("v1", [MANIFEST, ADAPTER_WEIGHTS], False, id="too-few-digits"),
        pytest.param("base", [MANIFEST, ADAPTER_WEIGHTS], False, id="base-is-not-an-adapter"),
        pytest.param("v0001.old", [MANIFEST, ADAPTER_WEIGHTS], False, id="suffix"),
    ],
)
def test_versions_lists_only_complete_version_folders(
    registry: Registry, name: str, files: list[str], listed: bool
) -> None:
    folder = registry.root / name
    folder.mkdir()
    for file in files:
        (folder / file).write_text("{}", encoding="utf-8")
    assert registry.versions() == ([name] if listed else [])
    if name != BASE_VERSION:  # base always "exists": it is served without being listed
        assert registry.exists(name) is listed


def test_versions_are_sorted_numerically(registry: Registry) -> None:
    for name in ["v0010", "v0002", "v10000", "v0001"]:
        folder = registry.root / name
        folder.mkdir()
        (folder / MANIFEST).write_text("{}", encoding="utf-8")
        (folder / ADAPTER_WEIGHTS).write_bytes(b"x")
    assert registry.versions() == ["v0001", "v0002", "v0010", "v10000"]


# ----- publishing -----


def test_publish_allocates_sequential_names_and_sets_manifest_version(registry: Registry) -> None:
    assert registry.versions() == []
    names = [publish_fake(registry) for _ in range(3)]
    assert names == ["v0001", "v0002", "v0003"]
    assert registry.versions() == names
    for name in names:
        assert registry.manifest(name).version == name
        assert (registry.adapter_dir(name) / ADAPTER_WEIGHTS).is_file()
    assert not list(registry.root.glob(".staging-*")), "publish renames staging away"


def test_publish_without_adapter_weights_raises_and_lists_nothing(registry: Registry) -> None:
    staging = registry.staging_dir()
    (staging / "adapter_config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(FileNotFoundError, match=ADAPTER_WEIGHTS):
        registry.publish(staging, make_manifest())
    assert registry.versions() == []
    assert staging.is_dir() and not (staging / MANIFEST).exists()


def test_publish_skips_names_held_by_incomplete_folders(registry: Registry) -> None:
    # An incomplete v0001 (say, copied in by hand) must not be overwritten or collided with.
    (registry.root / "v0001").mkdir()
    assert publish_fake(registry) == "v0002"
    assert registry.versions() == ["v0002"]


def test_unknown_versions_raise_not_found(registry: Registry) -> None:
    publish_fake(registry)
    for call in (registry.manifest, registry.adapter_dir):
        with pytest.raises(NotFoundError, match=r"unknown version 'v0009'; available versions: v0001"):
            call("v0009")
    # base is served but is not an adapter with a manifest.
    with pytest.raises(NotFoundError):
        registry.adapter_dir(BASE_VERSION)


KILLED_PUBLISH = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from hitl_app.versions.registry import ADAPTER_WEIGHTS, Registry

    registry = Registry(Path(sys.argv[1]))
    staging = registry.staging_dir()
    (staging / ADAPTER_WEIGHTS).write_bytes(b"half a training round")
    os.kill(os.getpid(), signal.SIGKILL)  # the power goes out before publish()
    print("unreachable")
    """
)


def test_publish_killed_midway_leaves_no_version_and_staging_is_cleaned(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    # cwd=REPO so the child imports this checkout's hitl_app.
    child = subprocess.run(
        [sys.executable, "-c", KILLED_PUBLISH, str(root)], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert "unreachable" not in child.stdout

    registry = Registry(root)
    assert registry.versions() == []
    assert registry.active().version == BASE_VERSION
    leftovers = list(root.glob(".staging-*"))
    assert len(leftovers) == 1 and (leftovers[0] / ADAPTER_WEIGHTS).is_file()

    assert registry.clean_staging() == 1
    assert list(root.glob(".staging-*")) == []
    assert registry.clean_staging() == 0
    # The next publish still gets the first name: the killed round took none.
    assert publish_fake(registry) == "v0001"


def test_version_folder_missing_its_manifest_is_not_listed(registry: Registry) -> None:
    # What a crash between writing weights and writing the manifest would leave behind.
    name = publish_fake(registry)
    (registry.root / name / MANIFEST).unlink()
    assert registry.versions() == []
    assert registry.consumed_cursor() == 0
    with pytest.raises(NotFoundError):
        registry.set_active(name, by="admin")


# ----- the ACTIVE pointer -----


def test_active_defaults_to_base(registry: Registry) -> None:
    pointer = registry.active()
    assert pointer.version == BASE_VERSION
    assert pointer.activated_by == "system"


def test_set_active_persists_across_instances(registry: Registry) -> None:
    v1 = publish_fake(registry)
    v2 = publish_fake(registry)
    registry.set_active(v1, by="admin", reason="better answers")

    fresh = Registry(registry.root)
    pointer = fresh.active()
    assert (pointer.version, pointer.activated_by, pointer.reason) == (v1, "admin", "better answers")

    fresh.set_active(v2, by="trainer")
    assert Registry(registry.root).active().version == v2
    fresh.set_active(BASE_VERSION, by="admin", reason="rollback")
    assert Registry(registry.root).active().version == BASE_VERSION
    # The atomic write leaves no temp files behind.
    assert sorted(p.name for p in registry.root.iterdir() if p.name.startswith(".ACTIVE")) == []


def test_set_active_unknown_version_lists_the_available_ones(registry: Registry) -> None:
    publish_fake(registry)
    publish_fake(registry)
    with pytest.raises(NotFoundError) as info:
        registry.set_active("v0042", by="admin")
    message = str(info.value)
    assert "'v0042'" in message
    assert "available versions: base, v0001, v0002" in message
    assert registry.active().version == BASE_VERSION  # nothing was written


def test_active_naming_a_vanished_version_falls_back_to_base(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    name = publish_fake(registry)
    registry.set_active(name, by="admin")
    (registry.root / name / ADAPTER_WEIGHTS).unlink()  # deleted by hand
    with caplog.at_level(logging.ERROR, logger="hitl_app.versions.registry"):
        pointer = registry.active()
    assert pointer.version == BASE_VERSION
    assert pointer.reason == "ACTIVE version missing"
    assert name in caplog.text


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"not json at all", id="text"),
        pytest.param(b"", id="empty"),
        pytest.param(b"{}", id="missing-fields"),
        pytest.param(b"[]", id="wrong-shape"),
        pytest.param(b'{"version": "v0001", "activated_by"', id="truncated"),
        pytest.param(b"\xff\xfe\xfd", id="not-utf8"),
    ],
)
def test_active_holding_garbage_falls_back_to_base(
    registry: Registry, caplog: pytest.LogCaptureFixture, content: bytes
) -> None:
    publish_fake(registry)
    (registry.root / "ACTIVE").write_bytes(content)
    with caplog.at_level(logging.ERROR, logger="hitl_app.versions.registry"):
        pointer = registry.active()
    assert pointer.version == BASE_VERSION
    assert pointer.reason == "ACTIVE unreadable"
    assert "unreadable" in caplog.text


# ----- the consumed cursor -----


@pytest.mark.parametrize(
    "cursors, expected",
    [
        pytest.param([], 0, id="none"),
        pytest.param([120], 120, id="one"),
        pytest.param([100, 350, 200], 350, id="max-not-last"),
        pytest.param([0, 0], 0, id="zeros"),
    ],
)
def test_consumed_cursor_is_the_max_over_manifests(registry: Registry, cursors: list[int], expected: int) -> None:
    for cursor in cursors:
        publish_fake(registry, store_cursor=cursor)
    assert registry.consumed_cursor() == expected
    assert Registry(registry.root).consumed_cursor() == expected


# ----- reward models -----


def _publish_with(registry: Registry, parent: str, reward: bool) -> str:
    from hitl_app.versions.manifest import RewardModelMetrics
    from hitl_app.versions.registry import REWARD_SUBDIR

    staging = registry.staging_dir()
    (staging / ADAPTER_WEIGHTS).write_bytes(b"policy")
    metrics = RoundMetrics(duration_s=1.0)
    if reward:
        (staging / REWARD_SUBDIR).mkdir()
        (staging / REWARD_SUBDIR / ADAPTER_WEIGHTS).write_bytes(b"reward")
        metrics = RoundMetrics(
            duration_s=1.0,
            reward_model=RewardModelMetrics(pairs=2, steps=1, loss_first=0.7, loss_last=0.6, heldout_pairs=0, duration_s=1.0),
        )
    return registry.publish(staging, make_manifest().model_copy(update={"parent": parent, "metrics": metrics}))


def test_a_version_without_a_reward_model_uses_its_nearest_ancestors(registry: Registry) -> None:
    v1 = _publish_with(registry, BASE_VERSION, reward=False)
    v2 = _publish_with(registry, v1, reward=True)
    v3 = _publish_with(registry, v2, reward=False)  # e.g. a round with labels only
    assert registry.reward_source(BASE_VERSION) is None
    assert registry.reward_source(v1) is None
    assert registry.reward_source(v2) == (v2, registry.adapter_dir(v2) / "reward")
    assert registry.reward_source(v3) == (v2, registry.adapter_dir(v2) / "reward")
    assert registry.reward_dir(v3) is None
    with pytest.raises(NotFoundError):
        registry.reward_source("v0099")


def test_publish_refuses_a_manifest_naming_a_reward_model_it_lacks(registry: Registry) -> None:
    from hitl_app.versions.manifest import RewardModelMetrics

    staging = registry.staging_dir()
    (staging / ADAPTER_WEIGHTS).write_bytes(b"policy")
    reward = RewardModelMetrics(pairs=2, steps=1, loss_first=0.7, loss_last=0.6, heldout_pairs=0, duration_s=1.0)
    manifest = make_manifest().model_copy(update={"metrics": RoundMetrics(duration_s=1.0, reward_model=reward)})
    with pytest.raises(FileNotFoundError, match="reward model"):
        registry.publish(staging, manifest)
    assert registry.versions() == []
