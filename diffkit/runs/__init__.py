"""The run folder, one owner: names, ``config.json``, resume state, EMA snapshots, listing, "latest".

Train writes run folders, sample and eval read them; none of them spells a run file's name or format
itself. This package knows the files, not the training loop.
"""

from diffkit.lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "CONFIG_FILE": "folder",
        "GENERATED_DIR": "folder",
        "PROGRESSION_FILE": "folder",
        "RUN_FORMAT": "folder",
        "SAMPLES_DIR": "folder",
        "STATE_FILE": "folder",
        "STATS_FILE": "folder",
        "EVAL_KIND": "folder",
        "eval_records": "folder",
        "read_stats": "folder",
        "check_run_dir": "folder",
        "class_names": "folder",
        "eval_samples_dir": "folder",
        "grid_path": "folder",
        "PHEMA_DIR": "folder",
        "list_phema": "folder",
        "phema_path": "folder",
        "snapshot_step": "snapshots",
        "latest_run_dir": "folder",
        "list_grids": "folder",
        "next_run_dir": "folder",
        "read_run_config": "folder",
        "run_config_payload": "folder",
        "run_data_dir": "folder",
        "run_ids": "folder",
        "snapshot_name": "folder",
        "train_options": "folder",
        "write_run_config": "folder",
        "SNAPSHOT_FORMAT": "snapshots",
        "latest_snapshot": "snapshots",
        "list_snapshots": "snapshots",
        "load_snapshot": "snapshots",
        "resolve_snapshot": "snapshots",
        "save_ema_snapshot": "snapshots",
        "snapshot_payload": "snapshots",
        "STATE_FORMAT": "state",
        "load_state": "state",
        "save_state": "state",
    },
)
