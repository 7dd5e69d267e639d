"""Print the folder of domaingpt's lm-eval tasks (for ``lm_eval --include_path``)."""

from domaingpt.interop.lm_eval_tasks import TASKS_DIR

print(TASKS_DIR)
