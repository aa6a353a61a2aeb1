"""The engine: runs a recipe's stages on any task's model. It names no task.

- ``train``: ``train`` and ``resume`` (prepare a run, hand it to the stage loop);
- ``stage_runner``, ``freezing``, ``schedules``, ``rates``, ``precision``,
  ``distribute``: the stage loop and what each stage trains, how fast, where;
- ``run``, ``run_config``, ``checkpoints``, ``artifact_loading``: the run
  folder, its settings, per-epoch checkpoints, loading what was saved;
- ``feature_cache`` and ``head_fit``: head stages on cached backbone features;
- ``evaluate`` and ``evaluation_data``: ``evaluate_run`` through the task;
- ``lr_find``: the learning-rate finder; ``summary``: plain-language summaries.
"""
