"""Running the ``dvc.yaml`` pipeline from outside: the library under the Prefect flow (``flows/``).

No Prefect import here: the flow passes plain callables (log lines, run ids) and turns each
DVC stage into a task. Modules:

- ``overrides``: flow parameters -> the params.yaml of a workspace (apply, anchor, check);
- ``workspace``: which directory a run uses, its source copy and params, one run per workspace;
- ``dvc_runner``: the one adapter for DVC as a subprocess (stage order, task tags and retries,
  ``dvc repro --single-item <stage>`` with streamed output, ``StageFailed``);
- ``run``: a run's project root, stage environment, local MLflow store and leaderboard.
"""
