"""Pure domain: task lifecycle, retry policy, errors. Imports nothing of ours and does no I/O."""
