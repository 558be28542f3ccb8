"""QEMU harness for racing Linux module unload against its callers."""
