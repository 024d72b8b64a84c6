"""The packaged configs: `bracplus train --config=<name>` (or `--config=<name>:<argument>`)
takes any module here but base by its name; base.py holds every default, and each task file
starts from it. A config of one's own is a file with get_config(), given by its path."""
