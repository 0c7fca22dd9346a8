"""The console: third-party warnings are filtered at start-up, the app's own are not."""

from __future__ import annotations

import logging
import warnings

import pytest

from hitl_app.core import console


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    levels = {name: logging.getLogger(name).level for name in console.NOISY_LOGGERS}
    level = root.level
    yield
    root.setLevel(level)
    for name, value in levels.items():
        logging.getLogger(name).setLevel(value)


@pytest.mark.parametrize("level", ["info", "warning"])
def test_third_party_warnings_are_filtered_and_the_apps_are_not(restore_logging, level) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        console.configure(level)
        warnings.warn_explicit("deprecated internals", FutureWarning, "modeling_utils.py", 1, module="transformers.modeling_utils")
        warnings.warn_explicit("kernels", UserWarning, "cextension.py", 1, module="bitsandbytes.cextension")
        warnings.warn_explicit("ours", FutureWarning, "trainer.py", 1, module="hitl_app.training.sft")
    assert [str(w.message) for w in caught] == ["ours"]
    assert logging.getLogger().level == getattr(logging, level.upper())
    assert logging.getLogger("httpx").level >= logging.WARNING


def test_debug_shows_third_party_warnings(restore_logging) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        console.configure("debug")
        warnings.warn_explicit("deprecated internals", FutureWarning, "modeling_utils.py", 1, module="transformers.modeling_utils")
    assert [str(w.message) for w in caught] == ["deprecated internals"]
