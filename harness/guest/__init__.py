"""The guest stage: a kernel's base image and payload, the VM that boots or
restores it, and the ways in (QMP, SSH) and out (the console and its splats)."""
