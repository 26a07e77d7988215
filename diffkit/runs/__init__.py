"""The run folder, one owner: names, ``config.json``, resume state, EMA snapshots, listing, "latest".

Train writes run folders, sample and eval read them; none of them spells a run file's name or format
itself. This package knows the files, not the training loop.
"""

from diffkit.runs.folder import (
    CONFIG_FILE,
    GENERATED_DIR,
    PROGRESSION_FILE,
    RUN_FORMAT,
    SAMPLES_DIR,
    STATE_FILE,
    STATS_FILE,
    check_run_dir,
    class_names,
    eval_samples_dir,
    grid_path,
    latest_run_dir,
    list_grids,
    next_run_dir,
    read_run_config,
    run_config_payload,
    run_data_dir,
    run_ids,
    snapshot_name,
    train_options,
    write_run_config,
)
from diffkit.runs.snapshots import (
    SNAPSHOT_FORMAT,
    latest_snapshot,
    list_snapshots,
    load_snapshot,
    resolve_snapshot,
    save_ema_snapshot,
    snapshot_payload,
)
from diffkit.runs.state import STATE_FORMAT, load_state, save_state

__all__ = [
    "CONFIG_FILE",
    "GENERATED_DIR",
    "PROGRESSION_FILE",
    "RUN_FORMAT",
    "SAMPLES_DIR",
    "SNAPSHOT_FORMAT",
    "STATE_FILE",
    "STATE_FORMAT",
    "STATS_FILE",
    "check_run_dir",
    "class_names",
    "eval_samples_dir",
    "grid_path",
    "latest_run_dir",
    "latest_snapshot",
    "list_grids",
    "list_snapshots",
    "load_snapshot",
    "load_state",
    "next_run_dir",
    "read_run_config",
    "resolve_snapshot",
    "run_config_payload",
    "run_data_dir",
    "run_ids",
    "save_ema_snapshot",
    "save_state",
    "snapshot_name",
    "snapshot_payload",
    "train_options",
    "write_run_config",
]
