import gc
import sys

from .cli import main

status = main()
# At exit the interpreter walks every live object for cycles only to free
# them a moment before the process ends (about 40 ms once SSH's crypto is
# loaded); the guests are already down and atexit hooks still run.
gc.freeze()
sys.exit(status)
