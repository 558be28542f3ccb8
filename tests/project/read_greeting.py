"""Read the device twice from the start: the greeting must be the same both times."""
import os
import sys

fd = os.open(sys.argv[1], os.O_RDONLY)
first = os.read(fd, 4096)
os.lseek(fd, 0, os.SEEK_SET)
again = os.read(fd, 4096)
os.close(fd)
assert first == again and first.endswith(b"\n"), (first, again)
sys.stdout.write(first.decode())
