"""The hooks through which kdcore finds everything it can train.

Built-in modes, strategies, datasets, models and capture formats are registered through these very hooks, so a
third-party package can do anything the built-ins do. A plugin is any module or object with
functions marked ``@kdcore.hookimpl`` and named like the specs below; a package makes itself
known through an entry point in the group ``kdcore``::

    [project.entry-points.kdcore]
    dkd = "kdcore_dkd"

Every hook is documented in ``docs/hooks.md``.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("kdcore")
hookimpl = pluggy.HookimplMarker("kdcore")


@hookspec
def kdcore_register_modes(register):
    """Register ``TrainingMode`` subclasses.

    :param register: call ``register(ModeClass)`` once per mode. The class's ``name`` must be
        unique across all plugins; a clash is an error naming both plugins.
    """


@hookspec
def kdcore_register_strategies(register):
    """Register ``DistillationStrategy`` subclasses.

    :param register: call ``register(StrategyClass)`` once per strategy; names are unique.
    """


@hookspec
def kdcore_register_datasets(register):
    """Register datasets: ``kdcore.CanDataset`` subclasses with a unique ``name``.

    A dataset needs no Lightning; the engine serves its splits through a ``GraphDataModule``.

    :param register: call ``register(DatasetClass)`` once per dataset.
    """


@hookspec
def kdcore_register_models(register):
    """Register model classes (``torch.nn.Module`` with ``name``, ``sizes`` and ``hparams``).

    Checkpoints record the model name and hyperparameters, so any registered model can be
    rebuilt as a teacher from its checkpoint alone.

    :param register: call ``register(ModelClass)`` once per model, or
        ``register(kdcore.Lazy("name", "package.module:ModelClass"))`` to have it imported only
        when a model is built (listing plugins then imports no torch).
    """


@hookspec
def kdcore_register_formats(register):
    """Register capture formats: ``kdcore.data.formats.base.CaptureFormat`` subclasses.

    Detection asks each format's ``sniff`` in descending ``priority`` (ties by name) and takes the
    first that accepts the file, so a format with a distinctive header should rank above one that
    recognises rows by their shape. Keep the module light: import parsing libraries inside
    ``read``, so that ``kdcore data list`` and ``data inspect`` start at once.

    :param register: call ``register(FormatClass)`` once per format; names are unique.
    """


@hookspec
def kdcore_validate_combination(mode, strategy, config):
    """Veto a combination of training mode and distillation strategy before anything is built.

    Called for every run, and for every cell of ``kdcore list --compat``; all implementations
    are called and every veto is reported.

    :param mode: the ``TrainingMode`` instance that will train.
    :param strategy: the ``DistillationStrategy`` instance, or ``None`` when KD is off.
    :param config: the resolved ``RunConfig``.
    :return: ``None`` to allow, or a one-line reason to refuse.
    """
