"""A broken third-party plugin is reported, not fatal: kdcore keeps working for everything else."""

import sys
import textwrap

import pytest
from typer.testing import CliRunner

from kdcore import Engine
from kdcore.cli import app
from kdcore.errors import UnknownNameError


def fake_distribution(site, name, module, source):
    """A package as pip leaves it: a module plus a .dist-info with an entry point in group kdcore."""
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[kdcore]\n{module} = {module}\n")


@pytest.fixture
def broken_site(tmp_path, monkeypatch):
    fake_distribution(tmp_path, "kdcore-crashes-on-import", "crashes_on_import", "raise ImportError('needs libfoo')\n")
    fake_distribution(tmp_path, "kdcore-typo", "misspelt_hook", """
        import kdcore

        @kdcore.hookimpl
        def kdcore_register_strategy(register):  # the hook is kdcore_register_strategies
            pass
    """)
    fake_distribution(tmp_path, "kdcore-raises", "raises_in_hook", """
        import kdcore

        @kdcore.hookimpl
        def kdcore_register_strategies(register):
            raise RuntimeError("strategy table is corrupt")
    """)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for module in ("crashes_on_import", "misspelt_hook", "raises_in_hook"):
        sys.modules.pop(module, None)


def test_broken_plugins_are_listed_as_failed_and_the_rest_works(broken_site):
    engine = Engine()
    failed = {p["name"]: p for p in engine.describe()["failed"]}
    assert failed["crashes_on_import"]["reason"] == "ImportError: needs libfoo"
    assert failed["crashes_on_import"]["distribution"] == "kdcore-crashes-on-import"
    assert "kdcore_register_strategy" in failed["misspelt_hook"]["reason"]
    assert "RuntimeError in kdcore_register_strategies: strategy table is corrupt" == failed["raises_in_hook"]["reason"]
    assert {"normal", "autoencoder", "curriculum", "fusion"} <= set(engine.modes.names())
    assert engine.strategies.names() == ["gat-attribution", "gat-softlabel", "vgae-dual-signal"]


def test_a_run_that_needs_a_broken_plugin_says_why(broken_site):
    with pytest.raises(UnknownNameError, match=r"unknown strategy 'foo'.*plugins that failed to load: .*crashes_on_import \(ImportError: needs libfoo\)"):
        Engine().strategies.get("foo")


def test_plugins_command_shows_the_failures(broken_site):
    result = CliRunner().invoke(app, ["plugins"])
    assert result.exit_code == 0, result.output
    assert "failed: crashes_on_import: ImportError: needs libfoo" in result.stdout
