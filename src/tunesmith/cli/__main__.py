"""`python -m tunesmith.cli ...`: the same as the `tunesmith` command (workers start their
training children this way, with the interpreter they run under)."""

from tunesmith.cli import main

main()
